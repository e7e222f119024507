// Package kubernetes holds taichi's fleet manifests (DaemonSet, ConfigMap,
// metrics Service) for Kubernetes-managed DPUs; its test decodes them
// strictly against the Kubernetes API types. No Go code ships from here.
package kubernetes
