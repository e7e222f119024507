package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/taichi-sched/taichi/scheduler"
)

// otherValue returns a valid value for a scheduler key different from its
// default, chosen from the default's kind so a new key needs no edit here.
func otherValue(t *testing.T, key string, def any) string {
	switch v := def.(type) {
	case string:
		if v == "auto" {
			return "300us"
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: default %q is neither auto nor a duration; teach otherValue its kind", key, v)
		}
		return (2 * d).String()
	case int:
		return fmt.Sprint(2*v + 1) // 0 (a switch left off) changes too
	case float64:
		return fmt.Sprint(v / 2)
	}
	t.Fatalf("%s: default %v (%T): teach otherValue this kind", key, def, def)
	return ""
}

// changedFields lists the Params fields that differ between a and b.
func changedFields(a, b scheduler.Params) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		if !va.Field(i).Equal(vb.Field(i)) {
			out = append(out, va.Type().Field(i).Name)
		}
	}
	return out
}

// TestEverySchedulerKeyReachesParams: each key under `scheduler:` in the
// embedded YAML (read from the YAML, so a new key is covered at once), set
// to another valid value, changes the engine's Params; each Params field is
// set by a key or listed in InternalSchedulerParams, never both.
func TestEverySchedulerKeyReachesParams(t *testing.T) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(defaultYAML)); err != nil {
		t.Fatal(err)
	}
	defaults, err := LoadBytes(nil, fourCPUs)
	if err != nil {
		t.Fatal(err)
	}
	base := defaults.SchedulerParams()
	if base != scheduler.DefaultParams() {
		t.Errorf("the default YAML's Params differ from scheduler.DefaultParams in %v", changedFields(base, scheduler.DefaultParams()))
	}

	keys := map[string]any{"policy": v.Get("policy")}
	for k, def := range v.GetStringMap("scheduler") {
		keys["scheduler."+k] = def
	}
	if len(keys) < 10 {
		t.Fatalf("only %d keys read from the default YAML", len(keys))
	}
	setByKey := map[string]string{}
	for key, def := range keys {
		if why, ok := notEngineKeys[key]; ok {
			if _, isMap := def.(map[string]any); !isMap {
				t.Errorf("%s is listed as not for the engine (%s) but is not a subtree", key, why)
			}
			continue
		}
		val := string(scheduler.PolicyStatic)
		if key != "policy" {
			val = otherValue(t, key, def)
		}
		parent, leaf, _ := strings.Cut(key, ".")
		yaml := fmt.Sprintf("%s: %s\n", key, val)
		if leaf != "" {
			yaml = fmt.Sprintf("%s:\n  %s: %s\n", parent, leaf, val)
		}
		cfg, err := LoadBytes([]byte(yaml), fourCPUs)
		if err != nil {
			t.Errorf("%s: %s (from default %v) rejected: %v", key, val, def, err)
			continue
		}
		changed := changedFields(base, cfg.SchedulerParams())
		if len(changed) == 0 {
			t.Errorf("%s: %s did not change scheduler.Params: the key is dropped", key, val)
		}
		for _, f := range changed {
			setByKey[f] = key
		}
	}
	typ := reflect.TypeFor[scheduler.Params]()
	for i := range typ.NumField() {
		f := typ.Field(i).Name
		key, set := setByKey[f]
		internal := slices.Contains(InternalSchedulerParams, f)
		switch {
		case set && internal && !derived(key, f):
			t.Errorf("Params.%s is set by %s but listed as internal", f, key)
		case !set && !internal:
			t.Errorf("Params.%s has no key and is not listed in InternalSchedulerParams", f)
		}
	}
}

// derived reports whether schedulerKeys documents that key adjusts field.
func derived(key, field string) bool {
	for _, k := range schedulerKeys {
		if k.key == key && slices.Contains(k.fields[1:], field) {
			return true
		}
	}
	return false
}

func TestSchedulerKeysValidatedByTheEngine(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"policy: fastest\n", "policy"},
		{"scheduler: {slice_min: 10ms, slice_max: 1ms}\n", "scheduler.slice_max"},
		{"scheduler: {idle_threshold: 2}\n", "scheduler.idle_threshold"},
		{"scheduler: {high_load: 0}\n", "scheduler.high_load"},
		{"scheduler: {flap_window: 0s}\n", "scheduler.flap_window"},
	} {
		_, err := LoadBytes([]byte(tc.yaml), fourCPUs)
		es, ok := AsErrors(err)
		if !ok || !slices.Contains(es.Keys(), tc.key) {
			t.Errorf("%q: errors %v do not name %s", tc.yaml, err, tc.key)
		}
		for _, k := range es.Keys() {
			if strings.Contains(k, "internal") {
				t.Errorf("%q: error on an internal field %q", tc.yaml, k)
			}
		}
	}
}
