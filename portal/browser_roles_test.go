package portal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// signInUserBrowser signs a users-file user in through the form (after
// signing out whoever was signed in) and lands on path.
func signInUserBrowser(t *testing.T, bctx context.Context, e *env, name, path, waitFor string) {
	t.Helper()
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.ts.URL+path), chromedp.WaitVisible(chromedp.CSS("main"))))
	if eval[bool](t, bctx, `!!document.querySelector('form.logout button')`) {
		require.NoError(t, chromedp.Do(bctx,
			chromedp.Click(chromedp.CSS("form.logout button")),
			chromedp.WaitVisible(chromedp.CSS("#username")),
			chromedp.Navigate(e.ts.URL+path)))
	}
	require.NoError(t, chromedp.Do(bctx,
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), name),
		chromedp.SendKeys(chromedp.CSS("#password"), testPassword),
		chromedp.Click(chromedp.CSS(`form[aria-labelledby="login-user"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".who")),
		chromedp.WaitVisible(chromedp.CSS(waitFor)),
	))
	require.Equal(t, name, eval[string](t, bctx, `document.querySelector('.who').textContent`))
}

// visibleButtons lists the text of every button the page shows in main.
const visibleButtons = `Array.from(document.querySelectorAll('main button, main a.button')).filter(function (b) { return b.getClientRects().length > 0; }).map(function (b) { return b.textContent.trim(); })`

// TestBrowserRoles: in a real browser, a viewer sees no button that acts;
// an approver who requested a run cannot approve it (four eyes) and the page
// says why; the same approver approves another's run.
func TestBrowserRoles(t *testing.T) {
	e := roleSetup(t)
	bctx := browser(t, e.ctx)
	gated := e.approvalConfig("gated")
	failed := e.running(e.newConfig("broken"), store.EnqueueParams{})
	require.NoError(t, e.st.Finish(e.ctx, failed.ID, testAgent, store.Outcome{Status: store.StatusFailed, Kind: store.KindApply, Error: "boom"}))
	others := e.enqueue(gated, store.EnqueueParams{RequestedBy: "otto"})
	e.park(others.ID)

	// A viewer: the pages show what is there, and no button acts on it.
	signInUserBrowser(t, bctx, e, "vera", "/clusters/eu-1/configs/prod", ".role-note")
	require.Empty(t, eval[[]string](t, bctx, visibleButtons), "a viewer's config page")
	require.Contains(t, eval[string](t, bctx, `document.querySelector('.role-note').textContent`), "is viewer")
	for _, id := range []uuid.UUID{others.ID, failed.ID} {
		require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.ts.URL+"/deployments/"+id.String()), chromedp.WaitVisible(chromedp.CSS("#terminal"))))
		require.Equal(t, []string{}, filterTerminal(eval[[]string](t, bctx, visibleButtons)), "a viewer's deployment page %s", id)
	}
	for _, path := range []string{"/clusters/eu-1", "/drift"} {
		require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(e.ts.URL+path), chromedp.WaitVisible(chromedp.CSS("main"))))
		require.Empty(t, eval[[]string](t, bctx, visibleButtons), "a viewer's %s", path)
	}
	screenshot(t, bctx, "viewer.png")

	// An approver deploys, and may not approve their own run.
	e.approvalConfig("mine")
	signInUserBrowser(t, bctx, e, "april", "/clusters/eu-1/configs/mine", `button[value="apply"]`)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`button[value="apply"]`)),
		chromedp.WaitVisible(chromedp.CSS("#terminal"))))
	loc := eval[string](t, bctx, `location.pathname`)
	own := uuid.MustParse(loc[strings.LastIndex(loc, "/")+1:])
	require.Equal(t, "april", e.deployment(own).RequestedBy)
	e.park(own)
	waitFor(t, bctx, "the approve button, live", visible(`form[action$="/approve"] button`), 20*time.Second)
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS(`form[action$="/approve"] button.primary`)),
		chromedp.WaitVisible(chromedp.CSS("main .message"))))
	require.Equal(t, "403 Forbidden", eval[string](t, bctx, `document.querySelector('main h1').textContent`))
	why := eval[string](t, bctx, `document.querySelector('main .message').textContent`)
	require.Contains(t, why, "april requested this deployment and cannot also approve it (four eyes)")
	require.Contains(t, why, "ask another approver")
	require.Nil(t, e.deployment(own).ApprovedAt)
	screenshot(t, bctx, "four-eyes.png")

	// Someone else's run: approved, and the page says by whom.
	require.NoError(t, chromedp.Do(bctx,
		chromedp.Navigate(e.ts.URL+"/deployments/"+others.ID.String()),
		chromedp.WaitVisible(chromedp.CSS(`form[action$="/approve"] button.primary`)),
		chromedp.SendKeys(chromedp.CSS("#review-comment"), "otto's plan, checked"),
		chromedp.Click(chromedp.CSS(`form[action$="/approve"] button.primary`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-field="approved_by"]`))))
	require.Equal(t, "april", eval[string](t, bctx, `document.querySelector('[data-field="approved_by"]').textContent`))
	d := e.deployment(others.ID)
	require.NotNil(t, d.ApprovedAt)
	require.Equal(t, "april", *d.ApprovedBy)
}

// filterTerminal drops the terminal's own "follow" control, which is no
// action on the deployment.
func filterTerminal(buttons []string) []string {
	out := []string{}
	for _, b := range buttons {
		if b != "Follow the latest lines" {
			out = append(out, b)
		}
	}
	return out
}
