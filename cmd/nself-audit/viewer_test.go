package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The viewer's end-to-end test drives the real page in headless Chromium
// (Debian's chromium package, which scripts/test.sh installs) against the
// real service on PostgreSQL: sign-in typed and by #token=, a refused
// token, filters and the URL, endless scroll, the detail with hostile
// metadata, the keyboard, verify, the live tail, phone width, a JWT of a
// non-admin role, screenshots that must not be blank, and no console
// errors.

// chromiumPath finds the browser. Without one the test fails: under CI
// always, locally unless NSELF_AUDIT_SKIP_BROWSER=1 asks to skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	names := []string{"/usr/bin/chromium", "chromium", "chromium-browser"}
	if p := os.Getenv("NSELF_AUDIT_CHROMIUM"); p != "" {
		names = []string{p}
	}
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium: the viewer's browser test needs Debian's chromium package " +
		"(bash scripts/test.sh installs it when run as root: apt-get install chromium)"
	if os.Getenv("CI") == "" && os.Getenv("NSELF_AUDIT_SKIP_BROWSER") == "1" {
		t.Skip(msg + "; skipped because NSELF_AUDIT_SKIP_BROWSER=1")
	}
	t.Fatal(msg)
	return ""
}

// browser is one headless Chromium tab and what its console said.
type browser struct {
	t       *testing.T
	ctx     context.Context
	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

// newBrowser starts Chromium with the flags this machine's closed network
// needs (no background connections) and a fresh profile.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx}
	messages := chromedp.Console(ctx) // starts the browser
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		<-done
	})
	return b
}

const browserWait = 15 * time.Second

func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage: %s", what, err, b.pageText())
	}
}

// wait polls a JavaScript expression until it is truthy.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v\npage: %s", what, expr, err, b.pageText())
	}
}

// pageText is what the page shows, for failure messages.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 1500)`))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return s
}

func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// takeConsole returns the console messages so far and forgets them.
func (b *browser) takeConsole() []chromedp.ConsoleMessage {
	// Messages arrive asynchronously: give the last ones a moment.
	time.Sleep(100 * time.Millisecond)
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.console
	b.console = nil
	return m
}

func (b *browser) screenshot(name string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if dir := os.Getenv("NSELF_AUDIT_SCREENSHOTS"); dir != "" { // to look at them
		os.WriteFile(filepath.Join(dir, name+".png"), shot, 0o644)
		if full, err := chromedp.Run(ctx, chromedp.FullScreenshot(90)); err == nil {
			os.WriteFile(filepath.Join(dir, name+"-full.jpg"), full, 0o644)
		}
	}
	return shot
}

// inked decodes a PNG screenshot and tells whether it shows something: at
// least 16 distinct colours, and at least 2% of its pixels differ from the
// most common one (the background). A blank or single-colour page fails.
func inked(shot []byte) (ok bool, colours int, share float64, err error) {
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		return false, 0, 0, err
	}
	counts := map[[4]uint32]int{}
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			counts[[4]uint32{r, g, b, a}]++
		}
	}
	most := 0
	for _, n := range counts {
		most = max(most, n)
	}
	total := bounds.Dx() * bounds.Dy()
	if total == 0 {
		return false, 0, 0, nil
	}
	share = float64(total-most) / float64(total)
	return len(counts) >= 16 && share >= 0.02, len(counts), share, nil
}

func (b *browser) checkInked(name string) {
	b.t.Helper()
	ok, colours, share, err := inked(b.screenshot(name))
	if err != nil || !ok {
		b.t.Errorf("screenshot %s looks empty: %d colours, %.1f%% of pixels off the background (%v)", name, colours, share*100, err)
	}
}

// viewerEvents seeds account acme: 120 page views by u1, 5 failed and 4
// successful sign-ins of u2, and, newest, one share by mallory whose
// metadata is markup that must stay text.
const xssNote = `<img src=x onerror=alert(1)>`

func seedViewer(t *testing.T, s *service) {
	t.Helper()
	base := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Second)
	var evs []string
	for i := range 130 {
		at := base.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)
		var e string
		switch {
		case i < 120:
			e = fmt.Sprintf(`{"occurred_at":%q,"actor_id":"u1","action":"page.view","resource_type":"page","resource_id":"p-%d"}`, at, i)
		case i < 125:
			e = fmt.Sprintf(`{"occurred_at":%q,"actor_id":"u2","action":"user.login","outcome":"failure","severity":"warning","ip_address":"198.51.100.7"}`, at)
		case i < 129:
			e = fmt.Sprintf(`{"occurred_at":%q,"actor_id":"u2","action":"user.logout"}`, at)
		default:
			e = fmt.Sprintf(`{"occurred_at":%q,"actor_id":"mallory","action":"doc.share","resource_type":"doc","resource_id":"d-1",`+
				`"outcome":"denied","severity":"critical","user_agent":"<b>agent</b>",`+
				`"metadata":{"note":%q,"script":"<script>alert(2)</script>","nested":{"n":[1,2,3]}}}`, at, xssNote)
		}
		evs = append(evs, e)
	}
	if r := s.do("POST", "/api/v1/events/batch", pluginHeaders("acme"), `{"events":[`+strings.Join(evs, ",")+`]}`); r.status != 201 {
		t.Fatalf("seed: %d %s", r.status, r.raw)
	}
	if r := s.do("POST", "/api/v1/checkpoints", pluginHeaders("acme"), ""); r.status != 201 {
		t.Fatalf("checkpoint: %d %s", r.status, r.raw)
	}
}

func consoleErrors(ms []chromedp.ConsoleMessage) []string {
	var errs []string
	for _, m := range ms {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			errs = append(errs, fmt.Sprintf("%s [%s] %s (%s:%d)", m.Type, m.Source, m.Text, m.URL, m.Line))
		}
	}
	return errs
}

// prefixProxy serves target under prefix, as the stack's Nginx does
// (rewrite ^/nself-audit/(.*)$ /$1), without buffering the live tail. Other
// paths are 404. It records the Last-Event-ID of each stream request.
type prefixProxy struct {
	*httptest.Server
	mu          sync.Mutex
	lastEventID []string
}

func (p *prefixProxy) streamResumes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lastEventID)
}

func newPrefixProxy(t *testing.T, target, prefix string) *prefixProxy {
	t.Helper()
	p := &prefixProxy{}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, prefix)
			r.Out.URL.RawPath = ""
		},
		FlushInterval: -1,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix+"/") {
			http.NotFound(w, r)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/events/stream") {
			p.mu.Lock()
			p.lastEventID = append(p.lastEventID, r.Header.Get("Last-Event-ID"))
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections() // the live tail's stream would hold Close
		srv.Close()
	})
	p.Server = srv
	return p
}

func TestViewerBrowser(t *testing.T) {
	t.Parallel()
	began := time.Now()
	b := newBrowser(t)
	s := start(t, "postgres", withJWT(`{"type":"HS256","key":"`+hsKey+`"}`))
	seedViewer(t, s)
	rows := `document.querySelectorAll('#rows tr').length`

	// The blank-page check can fail: an empty page is not inked.
	b.do("blank page", chromedp.Navigate("about:blank"))
	if ok, colours, _, err := inked(b.screenshot("blank")); err != nil || ok {
		t.Fatalf("a blank page passes the screenshot check (%d colours, %v)", colours, err)
	}

	// Nothing without a valid token: a wrong one is refused, no data shows.
	b.do("open the viewer", chromedp.Navigate(s.url+"/?account=acme"))
	b.wait("the sign-in form", `!document.getElementById('signin').hidden && document.activeElement.id === 'token'`)
	if v := evalJS[string](b, `document.getElementById('account').value`); v != "acme" {
		t.Errorf("account field %q, want acme from the URL", v)
	}
	b.do("a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"), chromedp.Click(chromedp.CSS("#signin-submit")))
	b.wait("the sign-in error", `document.getElementById('signin-error').textContent.includes('not accepted')`)
	if shown := evalJS[bool](b, `!document.getElementById('app').hidden || `+rows+` > 0`); shown {
		t.Errorf("data shown after a refused token")
	}
	for _, m := range consoleErrors(b.takeConsole()) {
		// The browser itself logs the refused request; nothing else may fail.
		if !strings.Contains(m, "[network]") || !strings.Contains(m, "401") {
			t.Errorf("console after a wrong token: %s", m)
		}
	}

	// Typed sign-in with the plugin token: the newest 100 events.
	b.do("type the token", chromedp.Evaluate[chromedp.Void](`document.getElementById('token').value = ''`), chromedp.SendKeys(chromedp.CSS("#token"), testSecret+kb.Enter))
	b.wait("the first page", rows+` === 100 && !document.getElementById('app').hidden`)
	b.wait("the overview", `document.getElementById('stats-summary').textContent.includes('130 events') &&
		document.getElementById('chain-state').textContent.includes('seq 130') && document.querySelector('#chart rect') !== null`)
	if who := evalJS[string](b, `document.getElementById('who').textContent`); !strings.Contains(who, "plugin token") || !strings.Contains(who, "account acme") {
		t.Errorf("who: %q", who)
	}
	// The token is in no URL, cookie or storage.
	if leak := evalJS[string](b, `[location.href, document.cookie, JSON.stringify(Object.assign({}, sessionStorage)),
		JSON.stringify(Object.assign({}, localStorage)), document.getElementById('token').value].join(' ')`); strings.Contains(leak, testSecret) {
		t.Errorf("the token leaked into the URL, a cookie, storage or the form: %s", leak)
	}
	if first := evalJS[string](b, `document.querySelector('#rows tr td.action').textContent`); first != "doc.share" {
		t.Errorf("first row %q, want the newest event doc.share", first)
	}

	// Endless scroll: the rest comes from the cursor.
	b.do("scroll", chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, document.body.scrollHeight)`))
	b.wait("the second page", rows+` === 130 && document.getElementById('list-status').textContent.includes('end of the list')`)

	// Filters change the table and the URL.
	b.do("filter by action prefix", chromedp.SendKeys(chromedp.CSS("#f-action"), "user.*"+kb.Enter))
	b.wait("user.* events", rows+` === 9 && [...document.querySelectorAll('#rows td.action')].every(td => td.textContent.startsWith('user.'))`)
	b.do("filter by outcome", chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('f-outcome'); s.value = 'failure'; s.dispatchEvent(new Event('change')); })()`))
	b.wait("failed sign-ins", rows+` === 5`)
	// Back and Forward step through the filters applied.
	b.do("back", chromedp.NavigateBack())
	b.wait("the action filter alone", rows+` === 9 && document.getElementById('f-outcome').value === '' && !location.search.includes('outcome')`)
	b.do("forward", chromedp.NavigateForward())
	b.wait("both filters again", rows+` === 5 && document.getElementById('f-outcome').value === 'failure'`)
	shared := evalJS[string](b, `location.href`)
	if !strings.Contains(shared, "action=user.*") || !strings.Contains(shared, "outcome=failure") || !strings.Contains(shared, "account=acme") {
		t.Errorf("the URL does not hold the view: %s", shared)
	}

	// The shared URL with #token= signs in directly, shows the same view,
	// and the token leaves the address bar.
	b.do("leave", chromedp.Navigate("about:blank"))
	b.do("open the shared view", chromedp.Navigate(shared+"#token="+testSecret))
	b.wait("the shared view", rows+` === 5 && document.getElementById('f-action').value === 'user.*' && document.getElementById('f-outcome').value === 'failure'`)
	if href := evalJS[string](b, `location.href + ' ' + location.hash`); strings.Contains(href, testSecret) || strings.Contains(href, "#") {
		t.Errorf("the fragment is still in the address bar: %s", href)
	}

	// The detail: metadata pretty-printed as text, never markup.
	b.do("clear the filters", chromedp.Click(chromedp.CSS("#clear")))
	b.wait("all events", rows+` === 100 && !location.search.includes('action')`)
	b.do("open the newest event", chromedp.Click(chromedp.CSS("#rows tr:first-child td.action")))
	b.wait("the detail", `document.getElementById('detail').open`)
	meta := evalJS[string](b, `document.getElementById('detail-metadata').textContent`)
	if !strings.Contains(meta, `"note": "`+xssNote+`"`) || !strings.Contains(meta, "\n  \"nested\": {\n    \"n\": [\n      1,") {
		t.Errorf("metadata is not pretty-printed text: %s", meta)
	}
	if n := evalJS[int](b, `document.querySelectorAll('img, b, script:not([src]), #detail-metadata *').length`); n != 0 {
		t.Errorf("%d elements were created from event data", n)
	}
	newest := s.get("/api/v1/events?limit=1", pluginHeaders("acme")).events()[0]
	chain := evalJS[string](b, `document.getElementById('detail-chain').textContent`)
	if !strings.Contains(chain, "130") || !strings.Contains(chain, newest["hash"].(string)) || !strings.Contains(chain, newest["prev_hash"].(string)) {
		t.Errorf("chain position: %q, want seq 130 and the hashes of %v", chain, newest["id"])
	}
	if ua := evalJS[string](b, `document.getElementById('detail-fields').textContent`); !strings.Contains(ua, "<b>agent</b>") {
		t.Errorf("user agent not shown as text: %s", ua)
	}
	b.checkInked("detail")

	// The keyboard: Escape closes and gives the row its focus back, the
	// arrows move, Enter opens.
	b.do("Escape", chromedp.KeyEvent(kb.Escape))
	b.wait("the detail closed, focus on the row", `!document.getElementById('detail').open && document.activeElement === document.querySelector('#rows tr:first-child')`)
	b.do("ArrowDown", chromedp.KeyEvent(kb.ArrowDown))
	b.wait("focus on the second row", `document.activeElement === document.querySelector('#rows tr:nth-child(2)')`)
	b.do("Enter", chromedp.KeyEvent(kb.Enter))
	b.wait("the second event's detail", `document.getElementById('detail').open && document.getElementById('detail-title').textContent === 'user.logout'`)
	b.do("Escape", chromedp.KeyEvent(kb.Escape))
	b.wait("the detail closed", `!document.getElementById('detail').open`)

	// Verify now.
	b.do("verify", chromedp.Click(chromedp.CSS("#verify")))
	b.wait("the verify result", `document.getElementById('verify-result').textContent.includes('Verified: 130 events checked')`)

	// The live tail shows an event posted after it is switched on.
	b.do("live on", chromedp.Click(chromedp.CSS("#live")))
	b.wait("the stream", `document.getElementById('live-status').dataset.state === 'connected'`)
	s.post("acme", `{"actor_id":"u9","action":"live.tail","metadata":{"via":"stream"}}`)
	b.wait("the live event", `document.querySelector('#rows tr:first-child td.action').textContent === 'live.tail' &&
		document.querySelector('#rows tr:first-child').classList.contains('new') && `+rows+` === 101 &&
		document.getElementById('live-status').textContent.includes('1 new')`)
	b.checkInked("desktop")

	// Phone width: the minor columns go, nothing overflows sideways, not
	// even the table inside its scrolling box.
	b.do("phone", chromedp.EmulateViewport(375, 812))
	b.wait("the phone layout", `getComputedStyle(document.querySelector('#rows td.resource')).display === 'none' &&
		document.documentElement.scrollWidth <= 376 && document.querySelector('.table-wrap').scrollWidth <= document.querySelector('.table-wrap').clientWidth`)
	b.checkInked("phone")
	b.do("desktop", chromedp.EmulateViewport(1280, 900))

	// Sign out, then a Hasura JWT of a non-admin role: only its own
	// events, no chain.
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	b.wait("signed out", `!document.getElementById('signin').hidden && document.getElementById('app').hidden && `+rows+` === 0`)
	jwt := hsToken(t, claims{user: "u2", role: "user", account: "acme", allowed: []string{"user"}})
	b.do("JWT sign-in", chromedp.SendKeys(chromedp.CSS("#token"), jwt+kb.Enter))
	b.wait("u2's events", rows+` === 9 && document.getElementById('who').textContent.includes('JWT user')`)
	b.wait("no chain for a reader", `document.getElementById('verify').hidden && document.getElementById('chain-state').textContent.includes('admin roles only')`)

	// A JWT that expires while the page is open: the next call's 401
	// signs the page out and its data goes.
	for _, m := range consoleErrors(b.takeConsole()) {
		t.Errorf("console: %s", m)
	}
	exp := time.Now().Add(3 * time.Second).Truncate(time.Second)
	b.do("sign out", chromedp.Click(chromedp.CSS("#signout")))
	short := hsToken(t, claims{user: "root", role: "admin", account: "acme", allowed: []string{"admin"}, exp: exp})
	b.do("short JWT sign-in", chromedp.SendKeys(chromedp.CSS("#token"), short+kb.Enter))
	b.wait("the admin's view", rows+` === 100 && document.getElementById('who').textContent.includes('JWT admin')`)
	time.Sleep(time.Until(exp) + 1100*time.Millisecond)
	b.do("apply after expiry", chromedp.Click(chromedp.CSS("#apply")))
	b.wait("signed out by the 401", `!document.getElementById('signin').hidden && document.getElementById('app').hidden && `+rows+` === 0 &&
		document.getElementById('signin-error').textContent.startsWith('Signed out: ')`)
	for _, m := range consoleErrors(b.takeConsole()) {
		if !strings.Contains(m, "[network]") || !strings.Contains(m, "401") {
			t.Errorf("console after the JWT expired: %s", m)
		}
	}

	// Under a proxy prefix, as behind the stack's Nginx at /nself-audit/:
	// every URL of the page is relative, the live tail included.
	proxy := newPrefixProxy(t, s.url, "/nself-audit")
	b.do("open under /nself-audit/", chromedp.Navigate(proxy.URL+"/nself-audit/?account=acme&actor_id=u9#token="+testSecret))
	b.wait("the view under the prefix", rows+` === 1 && document.querySelector('#chart rect') !== null &&
		document.getElementById('chain-state').textContent.includes('seq 130') && location.pathname === '/nself-audit/'`)
	b.do("live on", chromedp.Click(chromedp.CSS("#live")))
	b.wait("the stream", `document.getElementById('live-status').dataset.state === 'connected'`)
	s.post("acme", `{"actor_id":"u9","action":"live.prefixed"}`)
	b.wait("the live event under the prefix", rows+` === 2 && document.querySelector('#rows tr:first-child td.action').textContent === 'live.prefixed'`)

	// A dropped stream reconnects with Last-Event-ID: an event committed
	// while it was down arrives, and none twice.
	seq := s.get("/api/v1/events?limit=1", pluginHeaders("acme")).events()[0]["seq"].(float64)
	for _, m := range consoleErrors(b.takeConsole()) {
		t.Errorf("console: %s", m)
	}
	proxy.CloseClientConnections()
	s.post("acme", `{"actor_id":"u9","action":"live.resumed"}`)
	b.wait("the event of the gap", rows+` === 3 && document.querySelector('#rows tr:first-child td.action').textContent === 'live.resumed' &&
		document.getElementById('live-status').dataset.state === 'connected'`)
	if got, want := proxy.streamResumes(), []string{"", strconv.Itoa(int(seq))}; !slices.Equal(got, want) {
		t.Errorf("stream requests with Last-Event-ID %q, want %q", got, want)
	}

	for _, m := range consoleErrors(b.takeConsole()) {
		// The browser itself logs the stream that was cut.
		if !strings.Contains(m, "[network]") || !strings.Contains(m, "/events/stream") {
			t.Errorf("console: %s", m)
		}
	}
	t.Logf("browser test: %s", time.Since(began).Round(time.Millisecond))
}
