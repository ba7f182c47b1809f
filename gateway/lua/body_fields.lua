-- Unknown JSON body fields are a 400 naming the field. Envoy's transcoder drops them
-- silently and has no option to refuse them (envoyproxy/envoy#46623); for health data a
-- misspelled filter that is dropped widens a search. gateway/conventions.py fills in the
-- schema from the descriptor set (message -> JSON key -> what its value holds) and names
-- each REST route's body message in the route's metadata. Runs after the buffer filter
-- (the body is complete and within the route's limit) and before the transcoder.
-- Only the keys are checked: malformed JSON and wrong value types are left to the
-- transcoder, which answers them with its own 400.
local NS = "samhandling.conventions"
-- SCHEMA[message][key] = a message name (its keys are checked), {map = spec} (an object
-- whose values are spec), or true (anything: scalars, well-known types, Struct).
local SCHEMA = __SCHEMA__
-- FIELDS[message] = its field names, for the error message.
local FIELDS = __FIELDS__
-- HINTS[message][wrong key] = the right name(s) (routes.yaml `field_hints`).
local HINTS = __HINTS__
local MAX_DEPTH = 64

local function skip_ws(s, i)
  return s:find("[^ \t\r\n]", i) or (#s + 1)
end

local function string_end(s, i) -- s:byte(i) is the opening quote; the index after the close
  local j = i + 1
  while true do
    -- A plain find (memchr speed): a 50 MB base64 document must not cost seconds here.
    local k = s:find('"', j, true)
    if not k then
      return nil
    end
    local b = k - 1
    while s:byte(b) == 92 do
      b = b - 1
    end
    if (k - 1 - b) % 2 == 0 then -- not escaped: an even run of backslashes before it
      return k + 1
    end
    j = k + 1
  end
end

-- Each parser returns the index after the value, or nil plus (unknown key path, message)
-- when a key is unknown, or nil alone when the JSON is malformed.
local value

local function object(s, i, spec, path, depth)
  local fields = type(spec) == "string" and SCHEMA[spec] or nil
  local values = true
  if type(spec) == "table" then
    values = spec.map
  end
  i = skip_ws(s, i + 1)
  if s:byte(i) == 125 then
    return i + 1
  end
  while true do
    if s:byte(i) ~= 34 then
      return nil
    end
    local after = string_end(s, i)
    if not after then
      return nil
    end
    local key = s:sub(i + 1, after - 2)
    i = after
    local name = path == "" and key or (path .. "." .. key)
    local child = values
    if fields then
      child = fields[key]
      if child == nil then
        return nil, name, spec
      end
    end
    i = skip_ws(s, i)
    if s:byte(i) ~= 58 then
      return nil
    end
    local bad, message
    i, bad, message = value(s, skip_ws(s, i + 1), child, name, depth + 1)
    if not i then
      return nil, bad, message
    end
    i = skip_ws(s, i)
    local c = s:byte(i)
    if c == 125 then
      return i + 1
    end
    if c ~= 44 then
      return nil
    end
    i = skip_ws(s, i + 1)
  end
end

local function array(s, i, spec, path, depth)
  i = skip_ws(s, i + 1)
  if s:byte(i) == 93 then
    return i + 1
  end
  while true do
    local bad, message
    i, bad, message = value(s, i, spec, path, depth + 1)
    if not i then
      return nil, bad, message
    end
    i = skip_ws(s, i)
    local c = s:byte(i)
    if c == 93 then
      return i + 1
    end
    if c ~= 44 then
      return nil
    end
    i = skip_ws(s, i + 1)
  end
end

value = function(s, i, spec, path, depth)
  if depth > MAX_DEPTH then
    return nil
  end
  local c = s:byte(i)
  if c == 123 then
    return object(s, i, spec, path, depth)
  elseif c == 91 then
    return array(s, i, spec, path, depth)
  elseif c == 34 then
    return string_end(s, i)
  elseif c == nil then
    return nil
  end
  local j = s:find("[,%]}%s]", i) or (#s + 1) -- a number, true, false or null
  if j == i then
    return nil
  end
  return j
end

local function distance(a, b) -- Levenshtein, for "did you mean"
  if math.abs(#a - #b) > 2 then
    return 3
  end
  local previous = {}
  for j = 0, #b do
    previous[j] = j
  end
  for i = 1, #a do
    local current = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      current[j] = math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
    end
    previous = current
  end
  return previous[#b]
end

local function explain(path, message)
  local key = path:match("([^.]+)$")
  local hint = (HINTS[message] or {})[key]
  if not hint then
    for known in (FIELDS[message] or ""):gmatch("[^, ]+") do
      if distance(key, known) <= 2 then
        hint = '"' .. known .. '"'
        break
      end
    end
  end
  local text = string.format('unknown field "%s" in the JSON body', path)
  if hint then
    text = text .. " (did you mean " .. hint .. "?)"
  end
  return text .. "; " .. message .. " has: " .. (FIELDS[message] or "no fields")
end

-- A streamed body (routes.yaml `stream_request_body`: the REST upload, a JSON array whose
-- first element is the metadata) is checked as it passes: its first STREAM_PREFIX bytes are
-- kept and parsed after each chunk. Headers have gone on by then, so the filter cannot answer
-- itself; on an unknown key it makes the current chunk invalid JSON, the transcoder ends the
-- request with its 400 (nothing is stored: the upload never completes) and the edge's local
-- reply mapper turns that into the UNKNOWN_FIELD answer from the dynamic metadata set here.
local STREAM_PREFIX = 262144

local function check_stream(handle, spec)
  local s = ""
  for chunk in handle:bodyChunks() do
    s = s .. chunk:getBytes(0, chunk:length())
    local ok, path, message = value(s, skip_ws(s, 1), spec, "", 0)
    if path then
      local info = handle:streamInfo():dynamicMetadata()
      info:set(NS, "unknown_field", path)
      info:set(NS, "unknown_field_message", explain(path, message))
      chunk:setBytes("!")
      return
    end
    if ok or #s > STREAM_PREFIX then
      return -- the metadata is past (a chunk element's base64 is never a key)
    end
  end
end

function envoy_on_request(handle)
  local spec = handle:metadata():get("body")
  if not spec then
    return
  end
  if handle:metadata():get("stream") then
    check_stream(handle, spec)
    return
  end
  local body = handle:body()
  if not body or body:length() == 0 then
    return
  end
  local s = body:getBytes(0, body:length())
  local i = skip_ws(s, 1)
  if i > #s then
    return
  end
  local ok, path, message = value(s, i, spec, "", 0)
  if ok or not path then
    return -- known keys only, or malformed JSON (the transcoder answers that)
  end
  handle:streamInfo():dynamicMetadata():set(NS, "unknown_field", path)
  handle:respond({ [":status"] = "400" }, explain(path, message))
end
