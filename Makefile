run:
	scripts/run.sh

test:
	scripts/test.sh

bench:
	.venv/bin/python bench/sip_parse.py

.PHONY: run test bench
