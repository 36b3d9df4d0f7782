-- wrk script: POST /v1/classify, one review per request; each thread's connections cycle
-- through the tasks task0..task{N-1} (N from the TASKS environment variable), so the load is
-- spread uniformly over the tasks and every micro-batch holds rows of several tasks.
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
local ntasks = tonumber(os.getenv("TASKS") or "8")
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  local task = "task" .. ((i - 1) % ntasks)
  local text = texts[(i - 1) % #texts + 1]
  return wrk.format(nil, nil, nil, '{"task": "' .. task .. '", "texts": ["' .. text .. '"]}')
end
