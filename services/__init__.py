"""The five services of the complaint procedure; each has the same shape:

settings.py (typed settings, own prefix) · domain.py (pure) · handlers.py (events in)
· api.py (HTTP in) · app.py (composition root) · __main__.py (process entry).
"""
