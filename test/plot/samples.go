// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// readColumns reads a CSV of numbers, n columns a line; a first line that is
// not numbers is a header and skipped, blank lines too. The columns come back
// one slice each.
func readColumns(r io.Reader, n int) ([][]float64, error) {
	cols := make([][]float64, n)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		fields := strings.Split(text, ",")
		if len(fields) != n {
			return nil, fmt.Errorf("line %d: %d columns, want %d", line, len(fields), n)
		}
		vals := make([]float64, n)
		var err error
		for i, f := range fields {
			vals[i], err = strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err == nil && (math.IsNaN(vals[i]) || math.IsInf(vals[i], 0)) {
				err = fmt.Errorf("%q is not a finite number", f)
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			if line == 1 {
				continue // the header
			}
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		for i, v := range vals {
			cols[i] = append(cols[i], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return cols, nil
}
