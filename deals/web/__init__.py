"""The dashboard: a second face over the same library as the CLI (see deals.web.app).

    deals dashboard [--host H] [--port P]     serve it alone (deals.web.server.serve)
    deals run --dashboard                      serve it from the daemon's process too

Server-rendered pages (Starlette, Jinja2), htmx (vendored under static/, see its NOTICE)
for the lists' live updates, charts drawn on the server (deals.web.charts); safety in
deals.web.security.
"""
