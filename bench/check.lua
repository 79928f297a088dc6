-- The anchors' post.lua (same requests, same RESULT line), plus a check of every answer: a count
-- of answers that are not a successful result (HTTP status other than 200, a JSON-RPC error, a
-- tool result with isError, or the bare handler's null for a missing row), printed as a CHECK
-- line with the first such answer, so a fast stream of errors never passes for throughput.
-- BODY_KIND=stateless builds the stateless era's request, below.
dofile((os.getenv("ANCHORS_DIR") or ".") .. "/post.lua")

-- BODY_KIND=stateless: the 2026-07-28 era's request, which post.lua does not know: no session,
-- the method and tool mirrored in headers, and the version and client capabilities in
-- params._meta (PROTO sets MCP-Protocol-Version through post.lua). wrk.format takes the headers
-- given in place of wrk.headers, so the request's own are added to a copy of them.
if os.getenv("BODY_KIND") == "stateless" then
  local keys, counter = {}, 0
  for k in string.gmatch(os.getenv("KEYS") or "", "[^,]+") do table.insert(keys, k) end
  local headers = {["Mcp-Method"] = "tools/call", ["Mcp-Name"] = "jira_get_issue"}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  local meta = '"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. os.getenv("PROTO")
    .. '","io.modelcontextprotocol/clientCapabilities":{}}'
  request = function()
    counter = counter + 1
    local key = #keys > 0 and keys[math.random(1, #keys)] or "PROJ-" .. math.random(1, 1000)
    local body = '{"jsonrpc":"2.0","id":' .. counter .. ',"method":"tools/call","params":{'
      .. meta .. ',"name":"jira_get_issue","arguments":{"issue_key":"' .. key .. '"}}}'
    return wrk.format(nil, nil, headers, body)
  end
end

-- TOKENS_FILE: a bearer token a request, taken in turn from the file (one a line) starting at
-- line TOKENS_START + 1 and wrapping around: each request a token the server has not seen lately
-- (bench/bench_oauth.py's cold path). post.lua's request reads wrk.headers when it formats one;
-- the stateless body above copies them once, so this applies to the other bodies only.
local tokens_file = os.getenv("TOKENS_FILE")
if tokens_file and tokens_file ~= "" then
  local tokens = {}
  for line in io.lines(tokens_file) do table.insert(tokens, line) end
  local next_token = tonumber(os.getenv("TOKENS_START") or "0")
  local anchor_request = request
  request = function()
    wrk.headers["Authorization"] = "Bearer " .. tokens[next_token % #tokens + 1]
    next_token = next_token + 1
    return anchor_request()
  end
end

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
