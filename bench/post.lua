-- wrk script: POST /v1/classify with one review per request, cycling through a few texts.
-- Task: "sent", or with TASKS=N in the environment task0..task{N-1} in turn, so that the load
-- is spread uniformly over N tasks (bench/serve_mixed.sh).
local texts = {
  "这个手机很好用，电池也耐用。",
  "酒店的服务太差了，再也不会来了！",
  "书的内容一般，印刷质量不错。",
  "物流很快，包装完好，性价比高。",
  "屏幕有坏点，客服态度也不好，退货了。",
  "房间干净，早餐丰富，下次还来。",
  "质量太差，用了两天就坏了。",
  "不错，值得推荐给朋友。",
}
local ntasks = tonumber(os.getenv("TASKS") or "0")
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  local task = "sent"
  if ntasks > 0 then task = "task" .. ((i - 1) % ntasks) end
  local text = texts[(i - 1) % #texts + 1]
  return wrk.format(nil, nil, nil, '{"task": "' .. task .. '", "texts": ["' .. text .. '"]}')
end
