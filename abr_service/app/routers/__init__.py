"""One router per resource: decisions, sessions, models, algorithms, videos, health, legacy."""
