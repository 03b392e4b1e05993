# Unicorn's configuration for unicorn-shelf.service: 2 workers (TTIN/TTOU
# change that), one request at a time each, the app loaded in the master
# before it forks.
worker_processes 2
listen "127.0.0.1:8007", backlog: 64
timeout 60
preload_app true
