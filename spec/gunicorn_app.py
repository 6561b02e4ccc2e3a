# gunicorn_app.py — the WSGI app and the gunicorn configuration of
# spec/upgrade_peers_spec.lua (one file: `gunicorn -c spec/gunicorn_app.py
# --pythonpath spec gunicorn_app:app`). The app answers every request with
# the body "$GEN\n".
#
# Readiness: Debian 12's gunicorn (20.1) says READY=1 when its arbiter booted,
# before any worker runs, so that is no sign that anything serves. Instead a
# worker renames itself "gunicorn-ready" (/proc/self/comm) in the
# post_worker_init hook, which gunicorn calls once the worker loaded the app,
# right before its accept loop: the spec's readiness predicate counts the
# master's children so named.
import os

BODY = (os.environ.get("GEN", "?") + "\n").encode()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def post_worker_init(worker):
    with open("/proc/self/comm", "w") as f:
        f.write("gunicorn-ready")


workers = 2
accesslog = None
loglevel = "error"
graceful_timeout = 10
