"""The web console: every role's part of the procedure in a browser, in Chinese or English.

A backend-for-frontend: pages rendered on the server (FastAPI + Jinja2) that call the five
services' public HTTP APIs with the signed-in person's own token, so every permission stays
where it is enforced. It owns no domain data and writes no database; a read-only queue of
domain events feeds live updates to open pages (Server-Sent Events).
"""
