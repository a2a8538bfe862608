package reconciler

// Running is how many deployments (drift checks included) this agent runs
// at this moment: the grape_agent_running_deployments gauge.
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.runs)
}
