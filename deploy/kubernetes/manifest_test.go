package kubernetes

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/taichi-sched/taichi/config"
	"github.com/taichi-sched/taichi/daemon"
	"github.com/taichi-sched/taichi/topology"
)

// manifests is every object in this folder's YAML files, decoded strictly
// into its Kubernetes API type.
type manifests struct {
	daemonSet  *appsv1.DaemonSet
	configMaps map[string]*corev1.ConfigMap
	service    *corev1.Service
	namespace  *corev1.Namespace
}

// decodeStrict decodes one YAML document into the API type its apiVersion
// and kind name, the way the API server's strict field validation does:
// unknown fields, fields that differ from the API's only in case, and
// duplicate keys are errors (encoding/json alone matches names ignoring
// case, so "hostPid" would pass as hostPID).
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 DaemonSet":
		obj = &appsv1.DaemonSet{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 Namespace":
		obj = &corev1.Namespace{}
	default:
		return nil, &unknownKindError{tm.APIVersion, tm.Kind}
	}
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, obj)
	if err != nil {
		return nil, err
	}
	if len(strictErrs) > 0 {
		return nil, errors.Join(strictErrs...)
	}
	return obj, nil
}

type unknownKindError struct{ apiVersion, kind string }

func (e *unknownKindError) Error() string {
	return "no API type for apiVersion " + e.apiVersion + " kind " + e.kind
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, err := decodeStrict(doc)
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			switch o := obj.(type) {
			case *appsv1.DaemonSet:
				m.daemonSet = o
			case *corev1.ConfigMap:
				m.configMaps[o.Name] = o
			case *corev1.Service:
				m.service = o
			case *corev1.Namespace:
				m.namespace = o
			}
		}
	}
	if m.daemonSet == nil || m.service == nil || m.namespace == nil || len(m.configMaps) == 0 {
		t.Fatalf("want a DaemonSet, a ConfigMap, a Service and a Namespace; got %+v", m)
	}
	return m
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	b, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	typo := bytes.Replace(b, []byte("hostPID: true"), []byte("hostPid: true"), 1)
	if bytes.Equal(typo, b) {
		t.Fatal("daemonset.yaml has no 'hostPID: true' to misspell")
	}
	if _, err := decodeStrict(typo); err == nil || !strings.Contains(err.Error(), "hostPid") {
		t.Fatalf("a misspelled field decoded without an error naming it: %v", err)
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	for _, ns := range []string{m.daemonSet.Namespace, m.service.Namespace} {
		if ns != m.namespace.Name {
			t.Errorf("object in namespace %q, the manifests create %q", ns, m.namespace.Name)
		}
	}
}

func TestDaemonSetRunsPrivilegedOnDPUNodes(t *testing.T) {
	m := loadManifests(t)
	pod := m.daemonSet.Spec.Template.Spec
	if !pod.HostPID || !pod.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v, want both (CP processes and NIC interfaces of the node)", pod.HostPID, pod.HostNetwork)
	}
	if len(pod.NodeSelector) == 0 {
		t.Error("no node selector: taichi would land on nodes that are not DPUs")
	}
	sel, err := metav1.LabelSelectorAsSelector(m.daemonSet.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(m.daemonSet.Spec.Template.Labels)) {
		t.Error("the DaemonSet's selector does not match its pod template")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("container not privileged (cgroups, BPF, SCHED_FIFO)")
	}
	if _, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		t.Error("a CPU limit would throttle the daemon between reclaims")
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, path := range []string{"/sys/fs/cgroup", "/sys/fs/bpf", "/run/taichi"} {
		vm, ok := mounts[path]
		if !ok {
			t.Errorf("%s not mounted", path)
			continue
		}
		v := volumes[vm.Name]
		if v.HostPath == nil || v.HostPath.Path != path {
			t.Errorf("%s: volume %q is not the host's %s", path, vm.Name, path)
		}
	}
	cfgMount, ok := mounts["/etc/taichi"]
	if !ok {
		t.Fatal("/etc/taichi not mounted")
	}
	cfgVol := volumes[cfgMount.Name]
	if cfgVol.ConfigMap == nil || m.configMaps[cfgVol.ConfigMap.Name] == nil {
		t.Errorf("/etc/taichi is not one of the ConfigMaps in this folder: %+v", cfgVol)
	}
	if !slices.Equal(c.Command, []string{"/usr/bin/taichi", "run", "--config", "/etc/taichi/taichi.yaml"}) {
		t.Errorf("command %q does not run the daemon on the mounted config", c.Command)
	}

	if s := pod.TerminationGracePeriodSeconds; s == nil || *s < 20 {
		t.Errorf("terminationGracePeriodSeconds %v: the daemon may take 20s to reclaim every core", s)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
		t.Fatal("no preStop exec hook")
	}
	hook := strings.Join(c.Lifecycle.PreStop.Exec.Command, " ")
	if !strings.Contains(hook, "kill -TERM") || !strings.Contains(hook, "while kill -0") {
		t.Errorf("preStop does not send SIGTERM and wait: %s", hook)
	}
}

// The preStop hook, run for real: it reads the daemon's pid from
// `taichi status --json`, sends SIGTERM and returns only once that process
// has exited.
func TestPreStopHookTerminatesAndWaits(t *testing.T) {
	m := loadManifests(t)
	cmd := m.daemonSet.Spec.Template.Spec.Containers[0].Lifecycle.PreStop.Exec.Command
	if len(cmd) != 3 || cmd[0] != "/bin/sh" || cmd[1] != "-c" {
		t.Fatalf("preStop is not a /bin/sh -c script: %q", cmd)
	}
	// A process that exits a moment after SIGTERM, like the daemon does.
	victim := exec.Command("/bin/sh", "-c", "trap 'sleep 0.3; exit 0' TERM; while :; do sleep 0.05; done")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { victim.Wait(); close(exited) }()
	t.Cleanup(func() { victim.Process.Kill(); <-exited })

	// `taichi status --json` prints the Status indented by two spaces.
	st, err := json.MarshalIndent(daemon.Status{Version: "test", PID: victim.Process.Pid}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	statusFile := filepath.Join(t.TempDir(), "status.json")
	if err := os.WriteFile(statusFile, st, 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.Replace(cmd[2], "/usr/bin/taichi status --json", "cat "+statusFile, 1)
	if script == cmd[2] {
		t.Fatal("preStop does not ask `/usr/bin/taichi status --json` for the pid")
	}
	// Let the victim's shell install its trap before the hook signals it.
	waitFor(t, "victim's trap installed", func() bool { return sigCaught(victim.Process.Pid, 15) })
	out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("preStop: %v\n%s", err, out)
	}
	select {
	case <-exited:
	default:
		t.Fatal("preStop returned while the process it signalled was still running")
	}
	if victim.ProcessState == nil || !victim.ProcessState.Success() {
		t.Errorf("victim did not exit through its SIGTERM handler: %v", victim.ProcessState)
	}
}

// sigCaught reports whether pid has a handler for signal sig (SigCgt in /proc).
func sigCaught(pid, sig int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(sig-1)) != 0
		}
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dpuTopologies are the DPUs the fleet config is written for
// (8 and 16 Arm cores).
var dpuTopologies = map[string]*topology.Topology{
	"BlueField-2 (8 cores)":  {Online: []int{0, 1, 2, 3, 4, 5, 6, 7}},
	"BlueField-3 (16 cores)": {Online: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
}

func TestConfigMapPassesTaichiConfigValidate(t *testing.T) {
	m := loadManifests(t)
	for name, cm := range m.configMaps {
		data, ok := cm.Data["taichi.yaml"]
		if !ok {
			t.Errorf("ConfigMap %s has no taichi.yaml", name)
			continue
		}
		for dpu, topo := range dpuTopologies {
			cfg, err := config.LoadBytes([]byte(data), topo)
			if err != nil {
				t.Errorf("ConfigMap %s on a %s: taichi config validate fails:\n%v", name, dpu, err)
				continue
			}
			// The Service scrapes each node's pod on the metrics port.
			_, port, err := net.SplitHostPort(cfg.Metrics.Listen)
			if err != nil {
				t.Fatalf("metrics.listen %q: %v", cfg.Metrics.Listen, err)
			}
			if host, _, _ := net.SplitHostPort(cfg.Metrics.Listen); host == "127.0.0.1" || host == "localhost" {
				t.Errorf("metrics.listen %s: only the node itself could scrape it", cfg.Metrics.Listen)
			}
			checkMetricsPort(t, m, port)
		}
	}
}

func checkMetricsPort(t *testing.T, m manifests, port string) {
	t.Helper()
	c := m.daemonSet.Spec.Template.Spec.Containers[0]
	var containerPort string
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			containerPort = strconv.Itoa(int(p.ContainerPort))
		}
	}
	if containerPort != port {
		t.Errorf("container port %q, config listens on %s", containerPort, port)
	}
	if len(m.service.Spec.Ports) != 1 || strconv.Itoa(int(m.service.Spec.Ports[0].Port)) != port {
		t.Errorf("Service ports %+v, config listens on %s", m.service.Spec.Ports, port)
	}
	for what, ann := range map[string]map[string]string{"Service": m.service.Annotations, "pod template": m.daemonSet.Spec.Template.Annotations} {
		if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
			t.Errorf("%s scrape annotations %v, want scrape=true port=%s path=/metrics", what, ann, port)
		}
	}
	if len(m.service.Spec.Selector) == 0 || !labels.SelectorFromSet(m.service.Spec.Selector).Matches(labels.Set(m.daemonSet.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the taichi pods %v", m.service.Spec.Selector, m.daemonSet.Spec.Template.Labels)
	}
}
