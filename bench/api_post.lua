-- api_post.lua: wrk script for `kinfer api`: every request is a POST /v1/requests with a
-- small completion request, authenticated by $KINFER_BENCH_KEY. Counts answers other than 202
-- per thread and prints them, so a run that was rate limited or refused is visible.
local key = os.getenv("KINFER_BENCH_KEY") or ""
wrk.method = "POST"
wrk.path = "/v1/requests"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"tiny","prompt":"Summarize the risk of portfolio P001 in one sentence.",'
    .. '"sampling":{"max_tokens":64,"temperature":0.7},"symbols":["AAPL","MSFT"],'
    .. '"metadata":{"source":"wrk"}}'

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    other = 0
    accepted = 0
end

function response(status, headers, body)
    if status == 202 then
        accepted = accepted + 1
    else
        other = other + 1
        if other <= 3 then
            io.stderr:write(string.format("answer %d: %s\n", status, body))
        end
    end
end

function done(summary, latency, requests)
    local acc, oth = 0, 0
    for _, t in ipairs(threads) do
        acc = acc + t:get("accepted")
        oth = oth + t:get("other")
    end
    io.write(string.format("accepted_202 %d\nother_status %d\n", acc, oth))
    io.write(string.format("p50_ms %.2f\np90_ms %.2f\np99_ms %.2f\nmax_ms %.2f\n",
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000))
    io.write(string.format("req_per_s %.0f\n", summary.requests / (summary.duration / 1e6)))
end
