# The operator console (/console) in a real browser: integration-tests/tests/console.rs drives
# Debian's chromium, headless, through chromedriver (WebDriver) against the real server and a
# real receiver. Included by the main Makefile (MK_FRAGMENTS) after aws.mk, whose APT_SUDO it
# uses.
#
# Knobs: CHROMIUM, CHROMEDRIVER (the binaries), CONSOLE_SCREENSHOTS (where the PNGs go; by
# default $TMPDIR/task-scheduler-console).

CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
# The browser tests are #[ignore]d in a plain run (they need the browser); asked for with
# --ignored they fail, not skip, when it is missing. Two at a time: a chromium each.
CONSOLE_TESTS = $(CARGO) test --workspace --test console -- --ignored --test-threads 2

.PHONY: test-console

test-console: $(CHROMIUM) $(CHROMEDRIVER) ## The console in headless chromium against the real server: tasks, cancel, run now, reschedule, dead-letter retry, schedules (pause, trigger, resume, delete), hostile text
	$(BUILD_FOR_TESTS)
	CHROMIUM="$(CHROMIUM)" CHROMEDRIVER="$(CHROMEDRIVER)" $(CONSOLE_TESTS)

# Installed only when missing (a fresh CI machine runs as root), as libfaketime in aws.mk;
# Debian's packages, no browser download. The index is refreshed only if the first attempt
# cannot find them.
$(CHROMIUM) $(CHROMEDRIVER):
	$(APT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver || \
	  { $(APT_SUDO) apt-get update && $(APT_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }
	test -x $@
