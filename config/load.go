package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/taichi-sched/taichi/internal/fielderr"
	"github.com/taichi-sched/taichi/topology"
)

// Errors is every problem found in a configuration, one per key.
type Errors []fielderr.Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Keys returns the keys named by the errors, in order.
func (es Errors) Keys() []string {
	keys := make([]string, len(es))
	for i, e := range es {
		keys[i] = e.Key
	}
	return keys
}

// EnvPrefix prefixes environment overrides: TAICHI_SCHEDULER_SLO=100us.
const EnvPrefix = "TAICHI"

// Load reads the embedded defaults, then the file at path (if not empty),
// then TAICHI_* environment overrides; decodes and validates the result
// against topo. On any problem it returns Errors listing all of them.
func Load(path string, topo *topology.Topology) (*Config, error) {
	var data []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, Errors{{Key: "file", Problem: err.Error()}}
		}
		data = b
	}
	return LoadBytes(data, topo)
}

// LoadBytes is Load for YAML already in memory (nil: defaults only).
func LoadBytes(data []byte, topo *topology.Topology) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(defaultYAML)); err != nil {
		return nil, fmt.Errorf("embedded default config: %w", err)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := v.MergeConfig(bytes.NewReader(data)); err != nil {
			return nil, Errors{{Key: "file", Problem: "not valid YAML: " + oneLine(err.Error())}}
		}
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	cfg := &Config{}
	d := decoder{v: v}
	d.decodeStruct("", v.AllSettings(), reflect.ValueOf(cfg).Elem(), true)
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	if errs := cfg.validate(topo); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// decoder turns viper's merged settings into the typed Config, collecting a
// fielderr.Error per bad key instead of stopping at the first.
type decoder struct {
	v    *viper.Viper
	errs Errors
}

func (d *decoder) fail(key, format string, args ...any) {
	d.errs = append(d.errs, fielderr.Error{Key: key, Problem: fmt.Sprintf(format, args...)})
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// decodeStruct fills dst from m. fromViper marks the top-level tree, where
// leaf values are read through viper so environment overrides apply; list
// items are plain maps.
func (d *decoder) decodeStruct(prefix string, m map[string]any, dst reflect.Value, fromViper bool) {
	t := dst.Type()
	known := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("key")
		if key == "" || key == "-" {
			continue
		}
		known[key] = true
		path := join(prefix, key)
		raw, present := m[key]
		if fromViper && f.Type.Kind() != reflect.Struct {
			raw, present = d.v.Get(path), d.v.IsSet(path)
		}
		if !present || raw == nil {
			if def, ok := f.Tag.Lookup("default"); ok {
				raw = def
			} else {
				continue
			}
		}
		d.decodeValue(path, raw, dst.Field(i), fromViper)
	}
	var unknown []string
	for k := range m {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		d.fail(join(prefix, k), "unknown key")
	}
}

var (
	durationType     = reflect.TypeOf(Duration(0))
	autoDurationType = reflect.TypeOf(AutoDuration(0))
	sizeType         = reflect.TypeOf(Size(0))
)

// decodeValue sets dst from raw, failing at path with what was wanted: the
// config's own types by their syntax, the rest by kind.
func (d *decoder) decodeValue(path string, raw any, dst reflect.Value, fromViper bool) {
	switch dst.Type() {
	case autoDurationType:
		d.decodeAutoDuration(path, raw, dst)
		return
	case durationType:
		d.decodeDuration(path, raw, dst)
		return
	case sizeType:
		d.decodeSize(path, raw, dst)
		return
	}
	switch dst.Kind() {
	case reflect.String:
		switch x := raw.(type) {
		case string:
			dst.SetString(x)
		case int, int64, uint64, float64:
			dst.SetString(fmt.Sprint(x))
		default:
			d.fail(path, "want a string, got %T", raw)
		}
	case reflect.Int:
		n, ok := toInt(raw)
		if !ok {
			d.fail(path, "want an integer, got %v", raw)
			return
		}
		dst.SetInt(n)
	case reflect.Float64:
		f, ok := toFloat(raw)
		if !ok {
			d.fail(path, "want a number, got %v", raw)
			return
		}
		dst.SetFloat(f)
	case reflect.Bool:
		d.decodeBool(path, raw, dst)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			d.fail(path, "want a mapping, got %T", raw)
			return
		}
		d.decodeStruct(path, m, dst, fromViper)
	case reflect.Slice:
		d.decodeSlice(path, raw, dst)
	default:
		d.fail(path, "unsupported type %s", dst.Type())
	}
}

// decodeAutoDuration takes "auto" (0) or a positive duration.
func (d *decoder) decodeAutoDuration(path string, raw any, dst reflect.Value) {
	s, ok := raw.(string)
	if !ok {
		d.fail(path, "want auto or a duration such as 500us, got %v", raw)
		return
	}
	if strings.TrimSpace(s) == "auto" {
		dst.SetInt(0)
		return
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || dur <= 0 {
		d.fail(path, "want auto or a positive duration (e.g. 500us, 2ms), got %q", s)
		return
	}
	dst.SetInt(int64(dur))
}

func (d *decoder) decodeDuration(path string, raw any, dst reflect.Value) {
	s, ok := raw.(string)
	if !ok {
		d.fail(path, "want a duration such as 50us, 5ms or 1s, got %v", raw)
		return
	}
	dur, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		d.fail(path, "invalid duration %q (want e.g. 50us, 5ms, 1s)", s)
		return
	}
	dst.SetInt(int64(dur))
}

// decodeSize takes "64KiB" or a bare number of bytes.
func (d *decoder) decodeSize(path string, raw any, dst reflect.Value) {
	var s string
	switch x := raw.(type) {
	case string:
		s = x
	case int, int64, uint64:
		s = fmt.Sprint(x)
	default:
		d.fail(path, "want a size such as 64KiB, got %v", raw)
		return
	}
	n, err := ParseSize(s)
	if err != nil {
		d.fail(path, "%v", err)
		return
	}
	dst.SetInt(int64(n))
}

// decodeBool takes a YAML bool or, from the environment, its spelling.
func (d *decoder) decodeBool(path string, raw any, dst reflect.Value) {
	switch x := raw.(type) {
	case bool:
		dst.SetBool(x)
	case string:
		b, err := strconv.ParseBool(x)
		if err != nil {
			d.fail(path, "want true or false, got %q", x)
			return
		}
		dst.SetBool(b)
	default:
		d.fail(path, "want true or false, got %v", raw)
	}
}

// decodeSlice takes a YAML list or, for lists of scalars from the
// environment, "a,b" or "a b".
func (d *decoder) decodeSlice(path string, raw any, dst reflect.Value) {
	items, ok := raw.([]any)
	if !ok {
		if s, isStr := raw.(string); isStr && dst.Type().Elem().Kind() != reflect.Struct {
			// From the environment: "a,b" or "a b".
			for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
				items = append(items, f)
			}
		} else {
			d.fail(path, "want a list, got %T", raw)
			return
		}
	}
	out := reflect.MakeSlice(dst.Type(), len(items), len(items))
	for i, it := range items {
		d.decodeValue(fmt.Sprintf("%s[%d]", path, i), it, out.Index(i), false)
	}
	dst.Set(out)
}

func toInt(raw any) (int64, bool) {
	switch x := raw.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, false
		}
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func toFloat(raw any) (float64, bool) {
	switch x := raw.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil
	}
	return 0, false
}

// AsErrors extracts validation errors from err, if it holds any.
func AsErrors(err error) (Errors, bool) {
	var es Errors
	ok := errors.As(err, &es)
	return es, ok
}
