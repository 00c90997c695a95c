-- 16-deep HTTP/1.1 pipelining: each write carries 16 GET / requests.
-- wrk counts the requests in the string `request` returns and waits for all
-- 16 responses before the next write; latency is measured per batch.
local depth = 16
local batch

init = function(args)
   local requests = {}
   for i = 1, depth do
      requests[i] = wrk.format("GET", "/")
   end
   batch = table.concat(requests)
end

request = function()
   return batch
end
