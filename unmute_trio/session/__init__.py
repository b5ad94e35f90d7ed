"""One realtime session: the nursery of tasks behind a browser WebSocket and its helpers
(turn runner, client writer, pacing, Ogg/Opus codec, recorder). Import the modules directly."""
