# The browser page (web/) tested in a real browser: Debian's chromium, driven by Playwright's Python
# API (requirements.txt) with that executable; Playwright's own browser download is never used.
# browser: installs chromium with apt when there is none (TINYSERVE_CHROMIUM names another one).
# Where apt-get is missing it says why and stops without failing, and tests/e2e/test_page.py skips
# with the reason; with CI set (not "false") both fail instead.
##@ Browser page test: Debian's chromium and Playwright (mk/browser.mk, web/)
## TINYSERVE_CHROMIUM=path         the chromium the page test drives (default: chromium on the PATH)
TINYSERVE_CHROMIUM ?=
export TINYSERVE_CHROMIUM

.PHONY: browser test-page

browser: ## install Debian's chromium when missing (the page test's browser)
	@if [ -n "$(TINYSERVE_CHROMIUM)" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  reason="no chromium and no apt-get to install it: install chromium (or set TINYSERVE_CHROMIUM)"; \
	  if [ -n "$$CI" ] && [ "$$CI" != false ]; then echo "make browser: $$reason; CI is set: the page test must run" >&2; exit 1; fi; \
	  echo "make browser: skipped: $$reason; the page test will skip"; exit 0; \
	fi; \
	echo "chromium missing: installing Debian's chromium (the page test's browser)"; \
	$(call apt_install,chromium,the page test's browser)

test-page: $(SERVABLE) browser ## the page in headless chromium against its own TorchServe (make test runs it)
	$(RUN) -m pytest -q tests/e2e/test_page.py

# make test and make test-e2e run tests/e2e/test_page.py: they need the browser first.
test test-e2e: browser
