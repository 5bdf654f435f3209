"""The edgejoule edge agent: pull its site's model package, verify it, run it with LiteRT, measure the
energy per inference with the best meter available, and report over MQTT. No torch."""
