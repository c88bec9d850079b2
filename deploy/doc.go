// Package deploy holds what deploys Sluice where its users run it: the
// systemd units (systemd/), the Helm chart (helm/sluice) and the manifests
// it renders (kubernetes/), described in docs/deploy.md. Its Go code is
// only tests: they verify the units, start the agent exactly as its unit
// does, with exactly its capabilities, render and validate the chart, and
// enroll many agents with one DaemonSet ticket.
package deploy
