-- leakgate's wrk script (wrk 4.x, LuaJIT 2.1): plays leakgate's request scenario and prints the
-- run's result as one JSON line. Written for leakgate/load/wrk.py; not meant to be edited by users.
--
-- Invocation (leakgate/load/wrk.py builds it):
--
--   wrk -t T -c N -d Ss --timeout Ss --latency -s wrk_report.lua URL -- SCENARIO.lua T N SEED
--
-- T and N must be wrk's -t and -c; SEED (optional, 0 = the clock) seeds each thread's random
-- choices. Without arguments they are read from $LEAKGATE_WRK_SCENARIO, $LEAKGATE_WRK_THREADS,
-- $LEAKGATE_WRK_CONNECTIONS and $LEAKGATE_WRK_SEED. SCENARIO.lua (written by wrk.py) returns a
-- table:
--
--   return { version = 1, requests = {
--     { method = "POST", weight = 3.0, expect_status = 201, source = "POST /orders/{seq}",
--       path = { "/orders/", {"seq"} },              -- a template, see below
--       headers = { {"Content-Type", "application/json"} },
--       body = { "{\"id\": ", {"seq"}, "}" } },      -- nil: no body, no Content-Length
--     ... } }
--
-- A template is a plain string, or a list of parts that are concatenated per request: a string
-- is literal, {"seq"} is the {seq} counter, {"rand", A, B} a uniform integer in [A, B], {"uuid"}
-- a random version 4 UUID. wrk.py parses the scenario's "{seq}"-style templates (same rules as the
-- bundled generator), so this script never parses template syntax itself.
--
-- {seq}: thread k of T (k = 1..T) hands out k, k+T, k+2T, ... so values are unique across
-- threads; every {seq} of one request gets the same value. wrk calls request() once on thread 1
-- before the run to check that it parses; that call does not consume a {seq} value.
--
-- Status checks. wrk itself counts responses with status > 399 (summary.errors.status). When
-- some entry has expect_status ~= 0, response() is defined (it costs wrk some throughput, so it
-- is left undefined otherwise) and every response is checked: expect_status 0 accepts 2xx and
-- 3xx, any other value exactly that status. If all entries share one expect_status the check is
-- exact ("uniform"). Otherwise ("inflight") the entry a response belongs to is not knowable from
-- Lua (a wrk thread multiplexes many connections and response() gets no connection), so each
-- thread keeps the list of entries it has in flight (in send order; at most its connection
-- count, the oldest dropped beyond that: a request lost to a socket error never gets a
-- response) and a response counts as expected when some entry in flight on its thread accepts
-- its status: the oldest entry expecting exactly that status is retired, else the oldest
-- expecting 0. Otherwise it counts as unexpected and retires the oldest entry with a non-zero
-- expect_status (else the oldest). Then: when every response had its expected status the count
-- is 0 (exact, barring socket errors); when some did not, each one can shift the attribution of
-- one later response, so the count is off by at most the number of truly unexpected responses
-- (usually it is exact or low: a wrong status another in-flight entry expects is missed).
--
-- Output: one line on stdout, "LEAKGATE_WRK_JSON " followed by a JSON object:
--
--   {"version": 1, "threads": T, "connections": N (connections wrk really opened: N - N % T),
--    "connections_requested": N, "requests": n (responses completed), "duration_us": n,
--    "bytes": n, "errors": {"connect": n, "read": n, "write": n, "status": n (wrk's: > 399),
--    "timeout": n},
--    "status_check": {"mode": "none"|"uniform"|"inflight", "responses": n, "unexpected": n},
--    "status_codes": {"200": n, ...} (only when response() ran, else {}),
--    "latency": {"min_us": n, "max_us": n, "mean_us": x, "stdev_us": x, "samples": n
--                (distinct latency values), "co_interval_us": n,
--                "percentiles": [[0.1, us], [0.2, us], ..., [100.0, us]]}}
--
-- latency is wrk's own latency record: every response received within --timeout (any status),
-- in whole microseconds, after wrk's coordinated-omission correction (wrk 4 adds, for each
-- sample s >= 2*I, synthetic samples at s-I, s-2I, ... > I, where I = co_interval_us =
-- duration_us / (requests / connections_requested)); percentiles are wrk's latency:percentile(p)
-- for p = 0.1 .. 100 in steps of 0.1 (wrk returns 0 for p = 100: max_us is used). Empty when
-- no latency was recorded. Non-finite numbers are written as null.

local MARKER = "LEAKGATE_WRK_JSON"

-- ---- setup / done: the main Lua state ---------------------------------------------------------

local all_threads = {}

function setup(thread)
   all_threads[#all_threads + 1] = thread
   thread:set("lg_id", #all_threads)
end

-- ---- the running phase: one Lua state per wrk thread ------------------------------------------

local entries = {}
local cumulative = {}
local total_weight = 0
local nthreads = 1
local seq_next = 1
local cur_seq = nil
local uniform_rule = nil
local cap = 1
local inflight = {}
local verify_pending = false

local function fail(message)
   io.stderr:write("leakgate wrk script: ", message, "\n")
   io.stderr:flush()
   os.exit(3)
end

local function accepts(rule, status)
   if rule == 0 then
      return status >= 200 and status < 400
   end
   return status == rule
end

local function uuid()
   local b = {}
   for i = 1, 16 do
      b[i] = math.random(0, 255)
   end
   b[7] = b[7] % 16 + 64 -- version 4
   b[9] = b[9] % 64 + 128 -- RFC 4122 variant
   return string.format(
      "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
      b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
      b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16]
   )
end

local function expand(t)
   if type(t) == "string" then
      return t
   end
   local out = {}
   for i = 1, #t do
      local part = t[i]
      if type(part) == "string" then
         out[i] = part
      else
         local kind = part[1]
         if kind == "seq" then
            if cur_seq == nil then
               cur_seq = seq_next
               seq_next = seq_next + nthreads
            end
            out[i] = string.format("%.0f", cur_seq)
         elseif kind == "rand" then
            local lo, hi = part[2], part[3]
            out[i] = string.format("%.0f", lo + math.floor(math.random() * (hi - lo + 1)))
         else
            out[i] = uuid()
         end
      end
   end
   return table.concat(out)
end

local function build(e)
   if e.raw then
      return e.raw
   end
   cur_seq = nil
   local path = expand(e.path)
   local headers = {}
   for _, h in ipairs(e.headers) do
      headers[h[1]] = expand(h[2])
   end
   local body = nil
   if e.body ~= nil then
      body = expand(e.body)
   end
   return wrk.format(e.method, path, headers, body)
end

local function is_static(t)
   return t == nil or type(t) == "string"
end

local function pick()
   local r = math.random() * total_weight
   for i = 1, #cumulative do
      if r < cumulative[i] then
         return i
      end
   end
   return #cumulative
end

function init(args)
   local file = args[1] or os.getenv("LEAKGATE_WRK_SCENARIO")
   if not file or file == "" then
      fail("no scenario file (pass it after -- or set LEAKGATE_WRK_SCENARIO)")
   end
   -- init() cannot see wrk's -t and -c, and {seq} needs the thread count to stay unique
   nthreads = tonumber(args[2] or os.getenv("LEAKGATE_WRK_THREADS") or "")
   local connections = tonumber(args[3] or os.getenv("LEAKGATE_WRK_CONNECTIONS") or "")
   if not nthreads or nthreads < 1 or not connections or connections < nthreads then
      fail("pass the thread and connection counts after the scenario (or set "
         .. "LEAKGATE_WRK_THREADS and LEAKGATE_WRK_CONNECTIONS) as given to wrk -t and -c")
   end
   local seed = tonumber(args[4] or os.getenv("LEAKGATE_WRK_SEED") or "") or 0
   local id = tonumber(lg_id) or 1
   if seed == 0 then
      seed = os.time()
   end
   math.randomseed(seed + id * 7919)
   seq_next = id
   cap = math.max(1, math.floor(connections / nthreads))
   verify_pending = (id == 1)

   local ok, scenario = pcall(dofile, file)
   if not ok then
      fail("cannot load scenario " .. file .. ": " .. tostring(scenario))
   end
   if type(scenario) ~= "table" or scenario.version ~= 1 or type(scenario.requests) ~= "table" then
      fail("scenario " .. file .. " is not a leakgate wrk scenario (version 1)")
   end
   local rules = {}
   local nrules = 0
   for i, r in ipairs(scenario.requests) do
      local weight = tonumber(r.weight) or 0
      if weight <= 0 or type(r.method) ~= "string" or r.path == nil then
         fail("scenario entry " .. i .. " is malformed")
      end
      local e = {
         method = r.method,
         path = r.path,
         headers = r.headers or {},
         body = r.body,
         expect = tonumber(r.expect_status) or 0,
      }
      local static = is_static(e.path) and is_static(e.body)
      for _, h in ipairs(e.headers) do
         static = static and is_static(h[2])
      end
      if static then
         e.raw = build(e)
      end
      entries[#entries + 1] = e
      total_weight = total_weight + weight
      cumulative[#cumulative + 1] = total_weight
      if rules[e.expect] == nil then
         rules[e.expect] = true
         nrules = nrules + 1
      end
   end
   if #entries == 0 then
      fail("scenario " .. file .. " has no request")
   end

   lg_connections = connections
   lg_responses = 0
   lg_unexpected = 0
   lg_codes = {}
   if rules[0] and nrules == 1 then
      lg_mode = "none"
      response = nil -- wrk skips header and body parsing when response is not a function
   elseif nrules == 1 then
      lg_mode = "uniform"
      uniform_rule = entries[1].expect
   else
      lg_mode = "inflight"
   end
end

function request()
   local e = entries[pick()]
   if verify_pending then
      -- wrk's check that the request parses: not sent, so it must not use up a {seq} value.
      verify_pending = false
      local saved = seq_next
      local req = build(e)
      seq_next = saved
      return req
   end
   if lg_mode == "inflight" then
      inflight[#inflight + 1] = e.expect
      if #inflight > cap then
         table.remove(inflight, 1)
      end
   end
   return build(e)
end

function response(status, headers, body)
   lg_responses = lg_responses + 1
   lg_codes[status] = (lg_codes[status] or 0) + 1
   local ok
   if uniform_rule ~= nil then
      ok = accepts(uniform_rule, status)
   else
      -- The oldest entry expecting exactly this status, else the oldest expecting any 2xx/3xx
      -- (if the status is one): the most specific match keeps the catch-all entries for the
      -- responses that need them.
      local n = #inflight
      local exact, any = 0, 0
      for j = 1, n do
         local rule = inflight[j]
         if rule == status then
            exact = j
            break
         end
         if any == 0 and rule == 0 and status >= 200 and status < 400 then
            any = j
         end
      end
      local found = exact > 0 and exact or any
      if found > 0 then
         ok = true
      else
         -- Unexpected for every entry in flight: retire the oldest one with a specific
         -- expect_status (no later response is as likely to need it as a catch-all), else the
         -- oldest.
         ok = false
         for j = 1, n do
            if inflight[j] ~= 0 then
               found = j
               break
            end
         end
         if found == 0 and n > 0 then
            found = 1
         end
      end
      if found > 0 then
         table.remove(inflight, found)
      end
   end
   if not ok then
      lg_unexpected = lg_unexpected + 1
   end
end

-- ---- done: hand-written JSON ------------------------------------------------------------------

local function num(x)
   x = tonumber(x)
   if x == nil or x ~= x or x == math.huge or x == -math.huge then
      return "null"
   end
   if x == math.floor(x) and math.abs(x) < 2 ^ 53 then
      return string.format("%.0f", x)
   end
   return string.format("%.17g", x)
end

function done(summary, latency, requests)
   local T = #all_threads
   local n_requested = 0
   local responses, unexpected = 0, 0
   local codes = {}
   local mode = "none"
   for _, thread in ipairs(all_threads) do
      responses = responses + (tonumber(thread:get("lg_responses")) or 0)
      unexpected = unexpected + (tonumber(thread:get("lg_unexpected")) or 0)
      mode = thread:get("lg_mode") or mode
      local c = thread:get("lg_codes")
      if type(c) == "table" then
         for k, v in pairs(c) do
            local key = num(k)
            codes[key] = (codes[key] or 0) + (tonumber(v) or 0)
         end
      end
   end
   if all_threads[1] then
      -- the requested connections travel as a script argument, which only init() sees
      n_requested = tonumber(all_threads[1]:get("lg_connections")) or 0
   end

   local e = summary.errors or {}
   local out = {}
   local function add(s)
      out[#out + 1] = s
   end
   add(MARKER .. " {")
   add('"version": 1')
   add(', "threads": ' .. num(T))
   add(', "connections": ' .. num(n_requested - n_requested % math.max(T, 1)))
   add(', "connections_requested": ' .. num(n_requested))
   add(', "requests": ' .. num(summary.requests))
   add(', "duration_us": ' .. num(summary.duration))
   add(', "bytes": ' .. num(summary.bytes))
   add(', "errors": {"connect": ' .. num(e.connect) .. ', "read": ' .. num(e.read))
   add(', "write": ' .. num(e.write) .. ', "status": ' .. num(e.status))
   add(', "timeout": ' .. num(e.timeout) .. "}")
   add(', "status_check": {"mode": "' .. mode .. '", "responses": ' .. num(responses))
   add(', "unexpected": ' .. num(unexpected) .. "}")
   add(', "status_codes": {')
   local sep = ""
   for k, v in pairs(codes) do
      add(sep .. '"' .. k .. '": ' .. num(v))
      sep = ", "
   end
   add("}")

   local distinct = #latency
   local interval = 0
   local per_conn = math.floor((tonumber(summary.requests) or 0) / math.max(n_requested, 1))
   if per_conn > 0 then
      interval = math.floor((tonumber(summary.duration) or 0) / per_conn)
   end
   add(', "latency": {')
   if distinct > 0 then
      add('"min_us": ' .. num(latency.min) .. ', "max_us": ' .. num(latency.max))
      add(', "mean_us": ' .. num(latency.mean) .. ', "stdev_us": ' .. num(latency.stdev))
   else
      add('"min_us": 0, "max_us": 0, "mean_us": 0, "stdev_us": 0')
   end
   add(', "samples": ' .. num(distinct) .. ', "co_interval_us": ' .. num(interval))
   add(', "percentiles": [')
   if distinct > 0 then
      local max = latency.max
      local prev = 0
      for i = 1, 1000 do
         local v = max
         if i < 1000 then
            v = latency:percentile(i / 10)
            if v == nil or v < prev or v > max then
               v = max -- wrk found no sample at that rank (rounding at the top): the maximum
            end
         end
         prev = v
         add((i > 1 and ", [" or "[") .. string.format("%.1f", i / 10) .. ", " .. num(v) .. "]")
      end
   end
   add("]}}")
   io.write(table.concat(out), "\n")
   io.stdout:flush()
end
