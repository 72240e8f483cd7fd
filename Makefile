# natchat: every command a student or an instructor needs. `make help` lists them.

SHELL     := /bin/bash
CARGO     ?= cargo
BIN       ?= target/release/natchat
# The load generator, built beside natchat (src/bin/natchat-bench).
BENCH     ?= target/release/natchat-bench
# NOBUILD=1 runs BIN as it is, without `build` first (tests/make.rs: no nested cargo build).
BUILT     := $(if $(NOBUILD),,build)
# P2P chat: server address and port, the client's ID (asked for when empty), and ASLEEP=1
# to start the client asleep.
SERVER    ?= 127.0.0.1
PORT      ?= 10080
ID        ?=
ASLEEP    ?=
# Chat room: the address the server listens on, the host clients connect to, and the port.
BIND      ?= 0.0.0.0
HOST      ?= 127.0.0.1
ROOM_PORT ?= 8888
# The NAT lab to open: home, bare, symmetric, hairpin, tiers:A-B (e.g. tiers:moderate-strict),
# cgnat or cgnat-hairpin (mininet/README.md). It needs root: sudo unless already root.
MODE      ?= home
# One NAT lab scenario by name (make test-nat SCENARIO=bare-heal), with every line printed.
SCENARIO  ?=
# TRACE=1: record what each router did in each scenario and print a ladder of the datagrams
# (mininet/recorder.py); the captures are kept in a directory it prints.
TRACE     ?=
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)

# $(call arg,NAME): variable NAME's value as one shell word, exactly as given: a space, a quote
# or a `;` in ID reaches natchat (which refuses it itself) instead of the shell.
arg = '$(subst ','\'',$($(1)))'

.PHONY: help build run-server run-client run-room-server run-room-client demo test lint doc bench bench-scale mininet test-nat test-nat-matrix test-nat-ladder clean

help:
	@echo "make build                       build natchat and natchat-bench (release)"
	@echo "make run-server [PORT=10080]     the P2P registration server"
	@echo "make run-client ID=alice [SERVER=127.0.0.1 PORT=10080 ASLEEP=1]"
	@echo "                                 ASLEEP=1 starts the client asleep (--asleep)"
	@echo "make run-room-server [BIND=0.0.0.0 ROOM_PORT=8888]"
	@echo "make run-room-client [HOST=127.0.0.1 ROOM_PORT=8888]"
	@echo "make demo                        a scripted P2P session on loopback (one client Asleep), as a transcript"
	@echo "make test                        cargo test: every test but the NAT lab (installs nothing)"
	@echo "make lint                        rustfmt, clippy and rustdoc, warnings are errors"
	@echo "make doc                         the crate's documentation, private items included, for reading"
	@echo "make bench                       the standard benchmark set, as one table (about 20 seconds)"
	@echo "make bench-scale                 10,000 clients per server (about two minutes; needs raised kernel limits: it says which)"
	@echo "make mininet [MODE=home]         a NAT lab in the Mininet CLI, with what to type on which host (root);"
	@echo "                                 MODE: home, bare, symmetric, hairpin, tiers:A-B (A, B: none, open,"
	@echo "                                 moderate, strict; e.g. tiers:moderate-strict), cgnat, cgnat-hairpin"
	@echo "make test-nat [SCENARIO=name]    the NAT lab scenarios (root; about 4 minutes), or one, every line printed"
	@echo "                                 TRACE=1: record each router's packets and conntrack events, print a ladder"
	@echo "make test-nat-matrix             only the matrix: every NAT tier against every other, 4x4 (root; about a minute)"
	@echo "make test-nat-ladder             only the ladder of bad links, nine rungs (root; about a minute)"

build:
	$(CARGO) build --release --quiet

run-server: $(BUILT)
	$(call arg,BIN) server --port $(call arg,PORT)

run-client: $(BUILT)
	$(call arg,BIN) client --server $(call arg,SERVER) --port $(call arg,PORT) \
	  $(if $(ID),--id $(call arg,ID)) $(if $(filter 1,$(ASLEEP)),--asleep)

run-room-server: $(BUILT)
	$(call arg,BIN) room-server $(call arg,BIND) $(call arg,ROOM_PORT)

run-room-client: $(BUILT)
	$(call arg,BIN) room-client $(call arg,HOST) $(call arg,ROOM_PORT)

# A server and three scripted clients on a free loopback port (carol starts Asleep, as in the
# course's rubric); every line they print, tagged with who printed it, in order, and each
# command a client types (`[alice]  > @show_list`) just before what it prints in answer.
# Everything is stopped at the end, also on failure.
demo: $(BUILT)
	@set -e; trap 'kill $$server 2>/dev/null' EXIT; exec 3>&1; \
	port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
	tag() { while IFS= read -r line; do printf '%-8s %s\n' "[$$1]" "$$line"; done; }; \
	types() { printf '%-8s > %s\n' "[$$1]" "$$2" >&3; printf '%s\n' "$$2"; }; \
	client() { $(call arg,BIN) client --port $$port --udp-port 0 --id "$$@" 2>&1; }; \
	$(call arg,BIN) server --bind 127.0.0.1 --port $$port > >(tag server) 2>&1 & server=$$!; sleep 0.5; \
	{ sleep 1; types alice "@show_list"; sleep 1; types alice "@chat bob Hi Bob, it is Alice. Héllo in UTF-8 ✓"; \
	  sleep 3; types alice "@exit"; } | client alice | tag alice & \
	sleep 0.2; \
	{ sleep 1.3; types carol "@show_list"; sleep 1; types carol "@awake"; sleep 1; \
	  types carol "@chat alice Good morning, I was Asleep"; sleep 1; types carol "@exit"; } \
	  | client carol --asleep | tag carol & \
	sleep 0.3; \
	{ sleep 2; types bob "@chat alice Hello Alice!"; sleep 3; types bob "@show_list"; sleep 0.5; types bob "@exit"; } \
	  | client bob | tag bob; \
	sleep 0.5

# Only cargo test, also as root: the NAT lab (test-nat) is started on purpose, never by
# surprise on a machine where someone may have a lab of their own open.
test:
	$(CARGO) test --quiet

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items --quiet

doc:
	$(CARGO) doc --no-deps --document-private-items
	@echo "open target/doc/natchat/index.html"

bench: build
	$(call arg,BENCH) all

bench-scale: build
	$(call arg,BENCH) scale

mininet: build
	$(SUDO) bash mininet/execute_mn.sh --mode $(call arg,MODE)

test-nat: build
	$(SUDO) bash mininet/execute_mn.sh --test $(if $(TRACE),--trace) $(if $(SCENARIO),-v $(call arg,SCENARIO))

test-nat-matrix: build
	$(SUDO) bash mininet/execute_mn.sh --test nat-matrix

test-nat-ladder: build
	$(SUDO) bash mininet/execute_mn.sh --test ladder

clean:
	$(CARGO) clean
