"""The fraud team's River pipelines, run by tideline (algorithm: river)."""
