package ferrohsm

import (
	"fmt"
	"iter"
	"sort"
)

// paginate yields the items of page after page, fetching the next page with the previous
// page's cursor until a page has none. A cursor that repeats is an error (a server bug would
// otherwise loop forever).
func paginate[T any](cursor string, fetch func(cursor string) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		seen := map[string]bool{}
		for {
			items, next, err := fetch(cursor)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == "" {
				return
			}
			if seen[next] {
				var zero T
				yield(zero, fmt.Errorf("ferrohsm: the server repeated the cursor %q", next))
				return
			}
			seen[next] = true
			cursor = next
		}
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
