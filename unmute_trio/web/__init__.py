"""HTTP and WebSocket surface on Quart-Trio: app factory, routes, CORS, upload limits."""
