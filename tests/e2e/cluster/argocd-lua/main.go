// argocd-lua runs an Argo CD health check's tests (health.lua with its
// health_test.yaml and testdata, Argo CD's resource_customizations layout) in
// gopher-lua, the VM Argo CD runs them in, set up as Argo CD sets it up for a
// check given in argocd-cm: only the package, base and table libraries, one
// second per run, the object converted to Lua tables the way Argo CD does.
//
// Usage: argocd-lua DIR (DIR holds health.lua and health_test.yaml). Prints one
// line per case; exits 1 if any case fails.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

func run(script string, obj map[string]interface{}) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", decodeValue(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return lua.LVAsString(ret.RawGetString("status")), lua.LVAsString(ret.RawGetString("message")), nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var tests healthTest
	if err := yaml.Unmarshal(raw, &tests); err != nil {
		fmt.Fprintln(os.Stderr, "health_test.yaml:", err)
		os.Exit(2)
	}
	failed := 0
	for _, tc := range tests.Tests {
		input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		js, err := yaml.YAMLToJSON(input)
		if err != nil {
			fmt.Fprintln(os.Stderr, tc.InputPath+":", err)
			os.Exit(2)
		}
		var obj map[string]interface{}
		if err := json.Unmarshal(js, &obj); err != nil {
			fmt.Fprintln(os.Stderr, tc.InputPath+":", err)
			os.Exit(2)
		}
		status, message, err := run(string(script), obj)
		want := tc.HealthStatus
		if err != nil || status != want.Status || message != want.Message {
			failed++
			fmt.Printf("FAIL %s: got %q %q (error %v), want %q %q\n", tc.InputPath, status, message, err, want.Status, want.Message)
			continue
		}
		fmt.Printf("ok   %s: %s %q\n", tc.InputPath, status, message)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
