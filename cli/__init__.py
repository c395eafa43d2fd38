"""`viraliency`: score, compare and explain images from the terminal, serve, train, evaluate.

Commands run the app's own engine and decoder in-process (no HTTP server); `train` and
`evaluate` import `training` only when they run, so the service image needs none of it.
"""
