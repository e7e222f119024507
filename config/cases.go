package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// InvalidCase is a configuration file that must be rejected with an error
// naming Key. The files live in config/testdata/invalid and start with a
// "# key: KEY" line; the config and CLI tests share them.
type InvalidCase struct {
	Name, YAML, Key string
}

// LoadInvalidCases reads every *.yaml file in dir as an InvalidCase.
func LoadInvalidCases(dir string) ([]InvalidCase, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var cases []InvalidCase
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		first, _, _ := strings.Cut(string(b), "\n")
		key, ok := strings.CutPrefix(first, "# key: ")
		if !ok {
			return nil, fmt.Errorf("%s: first line must be \"# key: KEY\"", p)
		}
		cases = append(cases, InvalidCase{Name: strings.TrimSuffix(filepath.Base(p), ".yaml"), YAML: string(b), Key: strings.TrimSpace(key)})
	}
	return cases, nil
}
