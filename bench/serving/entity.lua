-- wrk script: POST /predict by a random entity id in [0, n).  ... -- <n> [bearer token]
local n = 1
function init(args)
  n = tonumber(args[1])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 1000)
end

function request()
  local body = '{"records":[{"entity_id":' .. math.random(0, n - 1) .. '}]}'
  return wrk.format(nil, nil, nil, body)
end
