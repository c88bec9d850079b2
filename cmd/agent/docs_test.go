package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is the repository's top directory, from this package's.
const repoRoot = "../.."

// docFiles are the Markdown files a reader of the repository follows.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "bench/README.md"}
	more, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range more {
		rel, _ := filepath.Rel(repoRoot, f)
		files = append(files, rel)
	}
	return files
}

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#+\s+(.+)$`)
)

// anchor is GitHub's anchor for a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces to '-'.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocLinksStayInside: every relative link of the README and docs/
// names a file inside the repository that exists, and a heading that
// exists where it names one; a clone holds everything its docs point to.
func TestDocLinksStayInside(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range docFiles(t) {
		text, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(text), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, frag, _ := strings.Cut(link, "#")
			target := filepath.Join(root, doc)
			if path != "" {
				target = filepath.Join(filepath.Dir(target), path)
			}
			if rel, err := filepath.Rel(root, target); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s links %s, outside the repository", doc, link)
				continue
			}
			body, err := os.ReadFile(target)
			if err != nil {
				if !os.IsNotExist(err) || !dirExists(target) {
					t.Errorf("%s links %s: %v", doc, link, err)
				}
				continue
			}
			if frag == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			var anchors []string
			for _, h := range mdHeading.FindAllStringSubmatch(string(body), -1) {
				anchors = append(anchors, anchor(h[1]))
			}
			if !slices.Contains(anchors, frag) {
				t.Errorf("%s links %s: no heading with that anchor", doc, link)
			}
		}
	}
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// TestArchitectureDocListsEveryPackage: docs/architecture.md's package map
// names every Go package of the repository, and no package that is gone.
func TestArchitectureDocListsEveryPackage(t *testing.T) {
	var pkgs []string
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".") && p != repoRoot) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			rel, _ := filepath.Rel(repoRoot, filepath.Dir(p))
			if !slices.Contains(pkgs, rel) {
				pkgs = append(pkgs, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(repoRoot, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(string(text), -1) {
		listed[m[1]] = true
	}
	for _, p := range pkgs {
		if !listed[p] {
			t.Errorf("package %s is missing from docs/architecture.md's package map", p)
		}
		delete(listed, p)
	}
	for p := range listed {
		t.Errorf("docs/architecture.md's package map lists %s, which is not a package", p)
	}
}
