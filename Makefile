# Local development entry points. Services (MariaDB, Kafka) run from this repo, no Docker.
PYTHON ?= python3

.PHONY: setup test services-up services-down services-status demo

setup:
	bash deploy/local/install.sh

test: setup
	$(PYTHON) -m pytest -q tests

services-up: setup
	$(PYTHON) -m deploy.local.services up

services-down:
	$(PYTHON) -m deploy.local.services down

services-status:
	$(PYTHON) -m deploy.local.services status

demo: setup
	$(PYTHON) -m deploy.local.demo
