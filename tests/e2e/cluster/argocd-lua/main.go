// argocd-lua runs an Argo CD resource customization's tests - a health check (health.lua
// with its health_test.yaml) and resource actions (actions/discovery.lua,
// actions/<name>/action.lua with actions/action_test.yaml), Argo CD's
// resource_customizations layout - in gopher-lua, the VM Argo CD runs them in, set up as
// Argo CD sets it up for scripts given in argocd-cm: only the package, base and table
// libraries, one second per run, the object converted to Lua tables and back the way
// Argo CD does.
//
// Usage:
//
//	argocd-lua DIR                        run DIR's health and action tests
//	argocd-lua run-action DIR FILE NAME   run action NAME on the object in FILE
//
// The first prints one line per case and exits 1 if any fails. The second does what
// `argocd admin settings resource-overrides run-action` does, as Argo CD's UI offers an
// action: discovery.lua first (an action it does not list, or lists disabled, is refused:
// exit 1), then the action; it prints the changed object as JSON.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type healthTest struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// action is one entry of discovery.lua's answer (Argo CD's ResourceAction).
type action struct {
	Name        string `json:"name"`
	Disabled    bool   `json:"disabled"`
	IconClass   string `json:"iconClass,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
}

type actionTest struct {
	DiscoveryTests []struct {
		InputPath string   `json:"inputPath"`
		Result    []action `json:"result"`
	} `json:"discoveryTests"`
	ActionTests []struct {
		Action             string `json:"action"`
		InputPath          string `json:"inputPath"`
		ExpectedOutputPath string `json:"expectedOutputPath"`
	} `json:"actionTests"`
}

// decodeValue: as Argo CD's util/lua does (maps with string keys, arrays 1-based).
func decodeValue(L *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(decodeValue(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), decodeValue(L, item))
		}
		return t
	}
	return lua.LNil
}

// encodeValue: a Lua value as JSON reads it, as the encoder Argo CD uses (layeh.com/gopher-json)
// does: a table whose first key is a number is an array (keys 1..n, no gaps), one whose first
// key is a string an object, an empty one an empty array.
func encodeValue(v lua.LValue, seen map[*lua.LTable]bool) (interface{}, error) {
	switch x := v.(type) {
	case lua.LBool:
		return bool(x), nil
	case lua.LNumber:
		return float64(x), nil
	case lua.LString:
		return string(x), nil
	case *lua.LNilType:
		return nil, nil
	case *lua.LTable:
		if seen[x] {
			return nil, errors.New("a table nested in itself")
		}
		seen[x] = true
		defer delete(seen, x)
		key, value := x.Next(lua.LNil)
		switch key.Type() {
		case lua.LTNil:
			return []interface{}{}, nil
		case lua.LTNumber:
			arr := []interface{}{}
			for want := lua.LNumber(1); key != lua.LNil; want++ {
				if key != want {
					return nil, errors.New("a sparse array, or an array with other keys")
				}
				item, err := encodeValue(value, seen)
				if err != nil {
					return nil, err
				}
				arr = append(arr, item)
				key, value = x.Next(key)
			}
			return arr, nil
		case lua.LTString:
			obj := map[string]interface{}{}
			for key != lua.LNil {
				k, ok := key.(lua.LString)
				if !ok {
					return nil, errors.New("an object with a key that is not a string")
				}
				item, err := encodeValue(value, seen)
				if err != nil {
					return nil, err
				}
				obj[string(k)] = item
				key, value = x.Next(key)
			}
			return obj, nil
		}
	}
	return nil, fmt.Errorf("a %s cannot be JSON", v.Type())
}

// cleanReturned: an empty table comes back as an empty array; where the object had an object,
// it stays one (Argo CD's cleanReturnedObj, for an action's result).
func cleanReturned(value, before interface{}) interface{} {
	switch v := value.(type) {
	case map[string]interface{}:
		if old, ok := before.(map[string]interface{}); ok {
			for k, item := range v {
				v[k] = cleanReturned(item, old[k])
			}
		}
	case []interface{}:
		switch old := before.(type) {
		case map[string]interface{}:
			if len(v) == 0 {
				return old
			}
		case []interface{}:
			for i := range v {
				if i < len(old) {
					v[i] = cleanReturned(v[i], old[i])
				}
			}
		}
	}
	return value
}

// run runs script with obj as the global `obj` and returns what it returned, as JSON values.
func run(script string, obj map[string]interface{}) (interface{}, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", decodeValue(L, obj))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return encodeValue(ret, map[*lua.LTable]bool{})
}

func health(script string, obj map[string]interface{}) (string, string, error) {
	ret, err := run(script, obj)
	if err != nil {
		return "", "", err
	}
	hs, ok := ret.(map[string]interface{})
	if !ok {
		return "", "", errors.New("the script returned no object")
	}
	status, _ := hs["status"].(string)
	message, _ := hs["message"].(string)
	return status, message, nil
}

// discover: discovery.lua's actions by name, as Argo CD reads them (an action is enabled
// unless it says disabled = true).
func discover(dir string, obj map[string]interface{}) ([]action, error) {
	script, err := os.ReadFile(filepath.Join(dir, "actions", "discovery.lua"))
	if err != nil {
		return nil, err
	}
	ret, err := run(string(script), obj)
	if err != nil {
		return nil, err
	}
	found := []action{}
	if arr, ok := ret.([]interface{}); ok && len(arr) == 0 {
		return found, nil // an empty table: no action
	}
	byName, ok := ret.(map[string]interface{})
	if !ok {
		return nil, errors.New("discovery.lua returned no table of actions by name")
	}
	for name, value := range byName {
		a := action{Name: name}
		if fields, ok := value.(map[string]interface{}); ok {
			js, _ := json.Marshal(fields)
			if err := json.Unmarshal(js, &a); err != nil {
				return nil, fmt.Errorf("action %s: %w", name, err)
			}
			a.Name = name
		}
		found = append(found, a)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].Name < found[j].Name })
	return found, nil
}

// runAction: discovery first, then the action; the changed object.
func runAction(dir, name string, obj map[string]interface{}) (map[string]interface{}, error) {
	offered, err := discover(dir, obj)
	if err != nil {
		return nil, fmt.Errorf("discovery.lua: %w", err)
	}
	var listed *action
	for i := range offered {
		if offered[i].Name == name {
			listed = &offered[i]
		}
	}
	if listed == nil {
		return nil, fmt.Errorf("action %s is not listed by discovery.lua", name)
	}
	if listed.Disabled {
		return nil, fmt.Errorf("action %s is disabled for this object", name)
	}
	script, err := os.ReadFile(filepath.Join(dir, "actions", name, "action.lua"))
	if err != nil {
		return nil, err
	}
	ret, err := run(string(script), obj) // (the script changes Lua tables, never obj)
	if err != nil {
		return nil, fmt.Errorf("action %s: %w", name, err)
	}
	changed, ok := cleanReturned(ret, obj).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("action %s returned no object", name)
	}
	return changed, nil
}

// load: a copy of a value through JSON (numbers as float64, as Argo CD's objects hold them).
func load(value interface{}) (map[string]interface{}, error) {
	js, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	var obj map[string]interface{}
	return obj, json.Unmarshal(js, &obj)
}

func readObject(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

func fatal(code int, err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(code)
}

// healthTests runs DIR/health_test.yaml's cases; the number failed.
func healthTests(dir string) int {
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fatal(2, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fatal(2, err)
	}
	var tests healthTest
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		fatal(2, fmt.Errorf("health_test.yaml: %w", err))
	}
	failed := 0
	for _, tc := range tests.Tests {
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		if err != nil {
			fatal(2, err)
		}
		status, message, err := health(string(script), obj)
		want := tc.HealthStatus
		if err != nil || status != want.Status || message != want.Message {
			failed++
			fmt.Printf("FAIL %s: got %q %q (error %v), want %q %q\n", tc.InputPath, status, message, err, want.Status, want.Message)
			continue
		}
		fmt.Printf("ok   %s: %s %q\n", tc.InputPath, status, message)
	}
	return failed
}

// actionTests runs DIR/actions/action_test.yaml's cases; the number failed. A discovery case
// passes when the actions listed are exactly those expected (Argo CD's own test asks only
// that each listed one is expected); an action case when the object it returns is the
// expected one.
func actionTests(dir string) int {
	base := filepath.Join(dir, "actions")
	raw, err := os.ReadFile(filepath.Join(base, "action_test.yaml"))
	if err != nil {
		fatal(2, err)
	}
	var tests actionTest
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		fatal(2, fmt.Errorf("action_test.yaml: %w", err))
	}
	failed := 0
	for _, tc := range tests.DiscoveryTests {
		obj, err := readObject(filepath.Join(base, tc.InputPath))
		if err != nil {
			fatal(2, err)
		}
		got, err := discover(dir, obj)
		want := append([]action{}, tc.Result...)
		sort.Slice(want, func(i, j int) bool { return want[i].Name < want[j].Name })
		if err != nil || !reflect.DeepEqual(got, want) {
			failed++
			fmt.Printf("FAIL discovery %s: got %+v (error %v), want %+v\n", tc.InputPath, got, err, want)
			continue
		}
		fmt.Printf("ok   discovery %s: %d actions\n", tc.InputPath, len(got))
	}
	for _, tc := range tests.ActionTests {
		obj, err := readObject(filepath.Join(base, tc.InputPath))
		if err != nil {
			fatal(2, err)
		}
		want, err := readObject(filepath.Join(base, tc.ExpectedOutputPath))
		if err != nil {
			fatal(2, err)
		}
		got, err := runAction(dir, tc.Action, obj)
		if err == nil {
			got, err = load(got)
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			failed++
			js, _ := json.Marshal(got)
			fmt.Printf("FAIL action %s on %s: got %s (error %v), want %s\n", tc.Action, tc.InputPath, js, err, tc.ExpectedOutputPath)
			continue
		}
		fmt.Printf("ok   action %s on %s: %s\n", tc.Action, tc.InputPath, tc.ExpectedOutputPath)
	}
	return failed
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func main() {
	if len(os.Args) == 5 && os.Args[1] == "run-action" {
		obj, err := readObject(os.Args[3])
		if err != nil {
			fatal(2, err)
		}
		changed, err := runAction(os.Args[2], os.Args[4], obj)
		if err != nil {
			fatal(1, err)
		}
		out, err := json.MarshalIndent(changed, "", "  ")
		if err != nil {
			fatal(1, err)
		}
		fmt.Println(string(out))
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua DIR | argocd-lua run-action DIR FILE ACTION")
		os.Exit(2)
	}
	dir := os.Args[1]
	failed := 0
	ran := false
	if exists(filepath.Join(dir, "health_test.yaml")) {
		failed += healthTests(dir)
		ran = true
	}
	if exists(filepath.Join(dir, "actions", "action_test.yaml")) {
		failed += actionTests(dir)
		ran = true
	}
	if !ran {
		fatal(2, fmt.Errorf("%s: no health_test.yaml nor actions/action_test.yaml", dir))
	}
	if failed > 0 {
		os.Exit(1)
	}
}
