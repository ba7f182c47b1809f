-- HTTP conventions partners' standard clients expect and Envoy's own filters cannot express
-- (gateway/README.md, "Partner conventions"). gateway/conventions.py fills in the
-- placeholders. First filter of the public listener: its response side sees every answer,
-- the services' and Envoy's local replies (jwt_authn, rbac, rate limit, transcoder) alike.
local NS = "samhandling.conventions"
local MASK = "__MASK__"
local DPOP_ALGS = "__DPOP_ALGS__"
local REALM = "__REALM__"
local MAX_REQUEST_BYTES = tonumber("__MAX_REQUEST_BYTES__")
local RETRY_AFTER = "__RETRY_AFTER__"

-- ErrorInfo reasons of a 401 (edge or service) -> the RFC 6750 / RFC 9449 error code;
-- false = no error attribute (RFC 6750 §3.1: a request without a token gets none).
local CHALLENGE_ERRORS = {
  NO_TOKEN = false,
  INVALID_DPOP_PROOF = "invalid_dpop_proof",
  USE_DPOP_NONCE = "use_dpop_nonce",
}

local function mask_identity_numbers(text)
  -- Exactly eleven digits is a personal identity number (services/common/logging.py scrub).
  return (text:gsub("%d+", function(run)
    if #run == 11 then
      return MASK
    end
  end))
end

-- gRPC metadata keys are [0-9a-z_.-] and values printable ASCII; HTTP allows more. The
-- transcoder passes every header on as metadata and a service's gRPC library refuses a call
-- whose metadata it cannot parse (a 500 for a harmless header). Unknown headers are to be
-- ignored, so such headers go no further (issue 18: found by the schema fuzzer).
local function drop_headers_grpc_cannot_carry(headers)
  local illegal = {}
  for key, value in pairs(headers) do
    if key:sub(1, 1) ~= ":" and (key:find("[^0-9a-z_.%-]") or value:find("[^\032-\126]")) then
      illegal[#illegal + 1] = key
    end
  end
  for _, key in ipairs(illegal) do
    headers:remove(key)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  drop_headers_grpc_cannot_carry(headers)
  local meta = handle:streamInfo():dynamicMetadata()
  -- The access log and the edge's span show this path: no query string, no identity number.
  local path = (headers:get(":path") or ""):gsub("%?.*$", "")
  meta:set(NS, "path", mask_identity_numbers(path))
  -- What the response side needs, written only when it is there (absent = no / no token):
  -- each write is a metadata merge in Envoy, on every request.
  if path == "/v1/fhir" or path:find("^/v1/fhir/") then
    meta:set(NS, "fhir", "yes")
  end
  local scheme = (headers:get("authorization") or ""):match("^(%S+)%s")
  if scheme then
    meta:set(NS, "scheme", scheme:lower())
  end
  if (headers:get("content-type") or ""):find("^application/grpc") then
    meta:set(NS, "grpc", "yes")
  end
  local route = handle:metadata()
  local keep = route:get("query_fields")
  if keep then
    -- RFC 6749 §3.1: the authorization endpoint ignores parameters it does not know (the
    -- transcoder would refuse them), so only the request's own fields go on.
    local base, query = (headers:get(":path") or ""):match("^([^?]*)%??(.*)$")
    local kept = {}
    for pair in query:gmatch("[^&]+") do
      if (("," .. keep .. ","):find("," .. pair:match("^[^=]*") .. ",", 1, true)) then
        kept[#kept + 1] = pair
      end
    end
    headers:replace(":path", base .. (#kept > 0 and ("?" .. table.concat(kept, "&")) or ""))
  end
  local query_header = route:get("query_header")
  if query_header then
    -- FHIR searches: the query string goes to the service in a header (its parameters are
    -- not proto fields, and the service refuses one that names a patient), never a client's.
    local base, query = (headers:get(":path") or ""):match("^([^?]*)%??(.*)$")
    headers:remove(query_header)
    if query ~= "" then
      headers:add(query_header, query)
    end
    headers:replace(":path", base)
  end
  if route:get("anonymous") then
    -- Anonymous routes ignore tokens (discovery, keys, OAuth endpoints): nobody downstream
    -- may answer 401 because of a header the route does not use.
    headers:remove("authorization")
  end
end

local function challenge(headers, scheme, reason)
  local existing = headers:get("www-authenticate")
  if existing and existing:lower():find("^dpop") then
    return -- the service's own DPoP challenge (e.g. use_dpop_nonce)
  end
  local code = CHALLENGE_ERRORS[reason]
  if code == nil then
    code = "invalid_token"
  end
  local err = code and string.format('error="%s", ', code) or ""
  local dpop = string.format('DPoP %salgs="%s"', err, DPOP_ALGS)
  local bearer = string.format('Bearer realm="%s"', REALM) .. (code and (", " .. err:sub(1, -3)) or "")
  if scheme == "dpop" or reason == "DPOP_BOUND_TOKEN" or reason == "INVALID_DPOP_PROOF" then
    headers:replace("www-authenticate", dpop)
  elseif scheme == "bearer" then
    headers:replace("www-authenticate", bearer)
  else
    -- No (usable) token: offer both schemes (RFC 9449 §7.1, RFC 6750 §3).
    headers:replace("www-authenticate", dpop)
    headers:add("www-authenticate", bearer)
  end
end

-- FHIR (HTTP status -> OperationOutcome issue type, http://hl7.org/fhir/issue-type).
local ISSUE_TYPES = {
  ["400"] = "invalid", ["401"] = "login", ["403"] = "forbidden", ["404"] = "not-found",
  ["405"] = "not-supported", ["408"] = "timeout", ["409"] = "conflict", ["410"] = "deleted",
  ["412"] = "conflict", ["413"] = "too-long", ["422"] = "processing", ["429"] = "throttled",
  ["501"] = "not-supported", ["503"] = "transient", ["504"] = "timeout",
}
local REASON_SYSTEM = "https://samhandling.no/fhir/CodeSystem/error-reason"

-- The raw (still JSON-escaped) text of a string field, or nil.
local function json_string(text, key)
  local _, stop = text:find('"' .. key .. '"%s*:%s*"')
  if not stop then
    return nil
  end
  local out, i = {}, stop + 1
  while i <= #text do
    local c = text:sub(i, i)
    if c == "\\" then
      out[#out + 1] = text:sub(i, i + 1)
      i = i + 2
    elseif c == '"' then
      break
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- The edge's and the services' error body {"code","message","details"} as a FHIR R4
-- OperationOutcome: diagnostics = the message, details.coding = the ErrorInfo reason,
-- expression = the BadRequest field violations.
local function operation_outcome(status, text)
  local message = json_string(text, "message") or ("HTTP " .. status)
  local reason = text:match('"reason"%s*:%s*"([%u_]+)"')
  local code = ISSUE_TYPES[status] or (status:sub(1, 1) == "5" and "exception" or "invalid")
  local details = '"text":"' .. message .. '"'
  if reason then
    details = string.format('"coding":[{"system":"%s","code":"%s"}],', REASON_SYSTEM, reason) .. details
  end
  local fields = {}
  for field in text:gmatch('"field"%s*:%s*"([%w_.%[%]-]+)"') do
    fields[#fields + 1] = '"' .. field .. '"'
  end
  local expression = #fields > 0 and (',"expression":[' .. table.concat(fields, ",") .. "]") or ""
  return string.format(
    '{"resourceType":"OperationOutcome","issue":[{"severity":"%s","code":"%s","details":{%s},"diagnostics":"%s"%s}]}',
    status:sub(1, 1) == "5" and "fatal" or "error", code, details, message, expression)
end

-- The transcoder's 400 for an unknown query parameter names it only in its message; add the
-- google.rpc.BadRequest field violation the unknown-body-field 400 carries.
local function with_query_violation(text)
  local field = text:match('Could not find field \\"([^\\"]+)\\" in the type')
  if not field or text:find("google.rpc.BadRequest", 1, true) then
    return nil
  end
  local violation = string.format(
    '{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":[{"field":"%s",'
      .. '"description":"unknown query parameter"}]}', field)
  local out, n = text:gsub('"details":%[%]', '"details":[' .. violation .. "]", 1)
  if n == 0 then
    out, n = text:gsub('("details":%[.-)%]', function(head)
      return head .. "," .. violation .. "]"
    end, 1)
  end
  return n > 0 and out or nil
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  -- Retry-After (RFC 9110 §10.2.3) on every 429 and 503, whoever produced it: the rate
  -- limit, a service's RESOURCE_EXHAUSTED transcoded to 429, an unavailable or overloaded
  -- upstream; gRPC callers too. A service's own header wins. (Here rather than in a Lua
  -- filter of its own: one Lua coroutine less on every response.)
  if (status == "429" or status == "503") and headers:get("retry-after") == nil then
    headers:add("retry-after", RETRY_AFTER)
  end
  local info = handle:streamInfo():dynamicMetadata():get(NS) or {}
  if info.grpc == "yes" then
    return -- gRPC callers keep gRPC semantics
  end
  -- REST callers: the status line and the JSON body already carry the gRPC status.
  headers:remove("grpc-status")
  headers:remove("grpc-message")
  headers:remove("grpc-status-details-bin")
  headers:remove("grpc-accept-encoding")
  headers:remove("grpc-encoding")
  -- A status the service picks itself (FHIR Bulk Data: 202 while an export runs), honoured
  -- only where routes.yaml's service_status allows it; the header never reaches a client.
  local chosen = headers:get("x-samhandling-http-status")
  headers:remove("x-samhandling-http-status")
  if status == "200" then
    local route = handle:metadata()
    local redirect = route:get("redirect_status")
    local success = route:get("success_status")
    local allowed = route:get("service_status")
    if chosen and allowed and (("," .. allowed .. ","):find("," .. chosen .. ",", 1, true)) then
      headers:replace(":status", chosen)
    elseif redirect and headers:get("location") then
      headers:replace(":status", tostring(redirect))
    elseif success then
      headers:replace(":status", tostring(success))
    end
    return
  end
  local fhir = info.fhir == "yes" and tonumber(status or "0") >= 400
  local limit = status == "413" and (handle:metadata():get("max_request_bytes") or MAX_REQUEST_BYTES)
  if status ~= "401" and status ~= "400" and not limit and not fhir then
    return
  end
  local text = ""
  local body = handle:body()
  if body and body:length() > 0 then
    text = body:getBytes(0, math.min(body:length(), 65536))
  end
  -- Header handles do not survive body(); take them again.
  headers = handle:headers()
  if status == "401" then
    challenge(headers, info.scheme, text:match('"reason"%s*:%s*"([%u_]+)"'))
  end
  local rewritten = status == "400" and body and with_query_violation(text)
  if rewritten and not fhir then
    body:setBytes(rewritten)
    headers:replace("content-length", tostring(#rewritten))
  end
  text = rewritten or text
  if limit and body then
    -- Say the limit (the edge's 413 is the buffer filter's, which does not).
    local message = string.format(
      "request body too large: this route takes at most %d bytes (%.1f MiB)", limit, limit / 1048576)
    text = text:gsub('"message":"[^"]*"', '"message":"' .. message .. '"', 1)
    if not fhir then
      body:setBytes(text)
      headers:replace("content-length", tostring(#text))
    end
  end
  if fhir and body and not text:find('"resourceType"') then
    local outcome = operation_outcome(status, text)
    body:setBytes(outcome)
    headers:replace("content-type", "application/fhir+json")
    headers:replace("content-length", tostring(#outcome))
  end
end
