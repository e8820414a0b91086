-- wrk script of scripts/soak.sh: every request on a fresh connection
-- (`Connection: close`), so that a reload's old workers never close a
-- keep-alive connection under a request the client already sent (nginx's
-- own keep-alive race, not the balancer's), and a pause of ARGS[1] ms
-- before each request on a connection, which caps the rate (the machine is
-- shared). wrk itself counts statuses >= 400 ("Non-2xx or 3xx responses")
-- and socket errors; nginx's access log has the statuses by code.

-- ARGS[2] = "keepalive" keeps wrk's default keep-alive connections instead.

local pause = 0

function init(args)
    pause = tonumber(args[1]) or 0
    if args[2] ~= "keepalive" then
        wrk.headers["Connection"] = "close"
    end
end

function delay()
    return pause
end
