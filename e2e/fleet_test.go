package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/store"
)

// The fleet race is the suite's longest test; it lives in a file of its own
// that sorts early, so that it starts among the first parallel tests instead
// of running alone at the end.

// TestStateFleetRace: 3 agents of one cluster race over 100 deployments of
// 20 local-state configs (terraform_data resources, five deployments per
// config: every config's first claim is a race and its later ones a test of
// the pinning). Every config's deployments all ran on one agent,
// every config's state exists once, in that agent's data dir, with exactly
// its one resource, and no deployment failed.
func TestStateFleetRace(t *testing.T) {
	t.Parallel()
	defer elapsed(t, time.Now())
	e := newEnv(t, envOptions{})
	templates, err := filepath.Abs("testdata/templates-data")
	require.NoError(t, err)
	const configs, deployments = 20, 100
	var cfgs []store.Config
	for i := 0; i < configs; i++ {
		c, err := e.st.UpsertConfig(e.ctx, e.cluster, fmt.Sprintf("fleet-%02d", i), []byte(`{"modules": {"data": {"value": "v0"}}}`), store.ConfigSettings{})
		require.NoError(t, err)
		cfgs = append(cfgs, c)
	}
	var agents []*agent
	for _, id := range []string{"fleet-a", "fleet-b", "fleet-c"} {
		agents = append(agents, e.startAgent(id, "--templates", templates, "--poll-interval", "100ms", "--concurrency", "2"))
	}
	var ds []store.Deployment
	for i := 0; i < deployments; i++ {
		c := cfgs[i%configs]
		if i >= configs && i%3 == 0 {
			// Some deployments change the resource, so states move on.
			var err error
			c, err = e.st.UpsertConfig(e.ctx, e.cluster, c.Name, []byte(fmt.Sprintf(`{"modules": {"data": {"value": "v%d"}}}`, i)), store.ConfigSettings{})
			require.NoError(t, err)
		}
		ds = append(ds, e.deploy(c, store.ActionApply))
	}
	deadline := time.Now().Add(30 * time.Minute) // a hang detector: ~6.5 min at load 4
	for !e.allFinal(ds) {
		require.False(t, time.Now().After(deadline), "deployments not finished:\n%s", e.statusTable(ds))
		e.requireAgentsAlive()
		time.Sleep(500 * time.Millisecond)
	}

	ranOn := map[string]map[string]bool{} // config → agents
	for _, d := range ds {
		got, err := e.st.GetDeployment(e.ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, store.StatusSucceeded, got.Status, "deployment %s: %s %s\n%s", d.ID, deref(got.ErrorKind), deref(got.Error), e.logText(d.ID))
		if ranOn[d.ConfigID.String()] == nil {
			ranOn[d.ConfigID.String()] = map[string]bool{}
		}
		ranOn[d.ConfigID.String()][deref(got.ClaimedBy)] = true
	}
	used := map[string]int{}
	for _, c := range cfgs {
		require.Len(t, ranOn[c.ID.String()], 1, "config %s ran on %v", c.Name, ranOn[c.ID.String()])
		h, err := e.st.StateHolderOf(e.ctx, c.ID)
		require.NoError(t, err)
		require.True(t, ranOn[c.ID.String()][h.AgentID], "config %s is held by %s", c.Name, h.AgentID)
		used[h.AgentID]++
		holders := 0
		for _, a := range agents {
			b, err := os.ReadFile(filepath.Join(a.dataDir, "state", e.cluster, c.ID.String(), "terraform.tfstate"))
			if os.IsNotExist(err) {
				continue
			}
			require.NoError(t, err)
			holders++
			require.Equal(t, 1, strings.Count(string(b), `"type": "terraform_data"`), "config %s: one resource, never a second one", c.Name)
		}
		require.Equal(t, 1, holders, "config %s has a state in exactly one data dir", c.Name)
	}
	t.Logf("configs held per agent: %v", used)
	require.Greater(t, len(used), 1, "the work was shared among agents")
}
