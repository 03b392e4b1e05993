# A tiny Rack app for the VM tests, served by Unicorn (unicorn-shelf.service):
# the same routes as app.py's WSGI side, in Ruby.
#
#   /               fast "ok"
#   /pid            the pid of the worker that served the request
#   /leak?mb=N      keep N more MiB in a global list: a leaking worker (the
#                   bytes are written, so they count as private memory)
#   /sleep?ms=N     hold the worker for N ms (a busy worker, a growing backlog)

LEAKED = []

def int_arg(env, name, default)
  Rack::Utils.parse_query(env["QUERY_STRING"].to_s).fetch(name, default.to_s).to_i
end

run(lambda do |env|
  case env["PATH_INFO"]
  when "/"
    [200, { "content-type" => "text/plain" }, ["ok\n"]]
  when "/pid"
    [200, { "content-type" => "text/plain" }, ["#{Process.pid}\n"]]
  when "/leak"
    # A fresh String of N MiB of a non-zero byte: every page is written.
    LEAKED << ("\xa5".b * (int_arg(env, "mb", 1) << 20))
    mb = LEAKED.sum(&:bytesize) >> 20
    [200, { "content-type" => "application/json" }, ["{\"pid\": #{Process.pid}, \"leaked_mb\": #{mb}}\n"]]
  when "/sleep"
    sleep(int_arg(env, "ms", 100) / 1000.0)
    [200, { "content-type" => "text/plain" }, ["slept\n"]]
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
end)
