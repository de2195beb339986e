-- wrk script for the "echo" scenario: every request is a POST of 64 KiB
-- (wrk adds the Content-Length header itself).
wrk.method = "POST"
wrk.body = string.rep("z", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
