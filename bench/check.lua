-- The anchors' post.lua (same requests, same RESULT line), plus a check of every answer: a count
-- of answers that are not a successful result (HTTP status other than 200, a JSON-RPC error, a
-- tool result with isError, or the bare handler's null for a missing row), printed as a CHECK
-- line with the first such answer, so a fast stream of errors never passes for throughput.
dofile((os.getenv("ANCHORS_DIR") or ".") .. "/post.lua")

local anchor_done = done
local threads = {}
bad = 0
first_bad = ""

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  local failed = status ~= 200
    or body == "null"
    or string.find(body, '"isError"%s*:%s*true') ~= nil
    or string.find(body, '"error"%s*:%s*{%s*"code"') ~= nil
  if failed then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  end
end

function done(summary, latency, requests)
  anchor_done(summary, latency, requests)
  local total, sample = 0, ""
  for _, thread in ipairs(threads) do
    total = total + (thread:get("bad") or 0)
    local first = thread:get("first_bad") or ""
    if sample == "" then sample = first end
  end
  io.write(string.format("CHECK bad=%d first=%s\n", total, string.gsub(sample, "\n", " ")))
end
