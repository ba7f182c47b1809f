-- HTTP conventions partners' standard clients expect and Envoy's own filters cannot express
-- (gateway/README.md, "Partner conventions"). gateway/conventions.py fills in the
-- placeholders. First filter of the public listener: its response side sees every answer,
-- the services' and Envoy's local replies (jwt_authn, rbac, rate limit, transcoder) alike.
local NS = "samhandling.conventions"
local MASK = "__MASK__"
local DPOP_ALGS = "__DPOP_ALGS__"
local REALM = "__REALM__"

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
  local scheme = (headers:get("authorization") or ""):match("^(%S+)%s") or ""
  local grpc = (headers:get("content-type") or ""):find("^application/grpc") ~= nil
  meta:set(NS, "scheme", scheme:lower())
  meta:set(NS, "grpc", grpc and "yes" or "no")
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

function envoy_on_response(handle)
  local headers = handle:headers()
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
  local status = headers:get(":status")
  if status == "200" then
    local route = handle:metadata()
    local redirect = route:get("redirect_status")
    local success = route:get("success_status")
    if redirect and headers:get("location") then
      headers:replace(":status", tostring(redirect))
    elseif success then
      headers:replace(":status", tostring(success))
    end
  elseif status == "401" then
    local reason = nil
    local body = handle:body()
    if body and body:length() > 0 then
      reason = body:getBytes(0, math.min(body:length(), 4096)):match('"reason"%s*:%s*"([%u_]+)"')
    end
    -- Header handles do not survive body(); take them again.
    challenge(handle:headers(), info.scheme, reason)
  end
end
