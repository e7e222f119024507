// Package grafana holds taichi's Grafana dashboard (taichi.json); its test
// checks that every metric the dashboard queries is one the daemon exports.
// No Go code ships from here.
package grafana
