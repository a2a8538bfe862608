package stateguard

import (
	"encoding/json"
	"fmt"
)

// BackendMove is a change of an applied config's state backend, for which
// Grape names the exact commands: the state must be where the new backend
// looks before the intent changes (Grape does not run terraform's
// `init -migrate-state` itself yet).
type BackendMove struct {
	ClusterID, ConfigID, Name string
	// From and To are the applied intent and the new one.
	From, To json.RawMessage
	// Holder is the agent holding a local state ("" when unknown).
	Holder string
	// IntentFile is where the new intent is ("" → intent.json).
	IntentFile string
}

// Steps returns the commands that move the state by hand and store the new
// intent, in order. Pure, so the CLI and the agent say the same.
func (m BackendMove) Steps() []string {
	localPath := fmt.Sprintf("<data-dir>/state/%s/%s/terraform.tfstate", m.ClusterID, m.ConfigID)
	from, _ := LocationOf(m.From, m.ClusterID, m.ConfigID, localPath, m.Holder)
	to, _ := LocationOf(m.To, m.ClusterID, m.ConfigID, localPath, "")
	file := m.IntentFile
	if file == "" {
		file = "intent.json"
	}
	on := "on the agent holding its state (`grape state list --cluster " + m.ClusterID + " --config " + m.Name + "` there shows it)"
	if m.Holder != "" {
		on = "on agent " + m.Holder + ", which holds its state, with that agent's --data-dir"
	}
	var copyStep string
	switch {
	case from.Backend == "local" && to.Backend != "local":
		copyStep = fmt.Sprintf("%s: `aws s3 cp %s s3://%s/%s --region %s`", on, localPath, to.Bucket, to.Key, to.Region)
	case from.Backend != "local" && to.Backend != "local":
		copyStep = fmt.Sprintf("`aws s3 cp s3://%s/%s s3://%s/%s --source-region %s --region %s`", from.Bucket, from.Key, to.Bucket, to.Key, from.Region, to.Region)
	case from.Backend != "local":
		copyStep = fmt.Sprintf("on the agent that is to hold it, with its --data-dir: `aws s3 cp s3://%s/%s %s --region %s` (queue the next deployment while only that agent runs: another agent would find no state and refuse it as state_missing)",
			from.Bucket, from.Key, localPath, from.Region)
	default:
		copyStep = "nothing to copy (the state stays where it is)"
	}
	return []string{
		"copy the state, while no deployment of the config runs: " + copyStep,
		fmt.Sprintf("`grape config apply --cluster %s --name %s --state-moved -f %s`", m.ClusterID, m.Name, file),
		fmt.Sprintf("`grape deploy --cluster %s --config %s --action plan --follow`, and expect \"No changes\" (a state that is not there is refused as state_missing: nothing is created)", m.ClusterID, m.Name),
	}
}

// Text is Steps as numbered lines.
func (m BackendMove) Text() string {
	s := ""
	for i, step := range m.Steps() {
		s += fmt.Sprintf("\n  %d. %s", i+1, step)
	}
	return s
}
