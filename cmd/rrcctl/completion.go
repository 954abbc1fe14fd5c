// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"io"
)

// bashCompletion completes rrcctl's commands and their flags, and container
// IDs for describe (read from `rrcctl status -o json`).
const bashCompletion = `# bash completion for rrcctl: source <(rrcctl completion bash)
_rrcctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} cmd="" i
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-address | -n | -timeout | -config) ((i++)) ;;
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	case $cmd in
	"") COMPREPLY=($(compgen -W "status describe protect metrics annotations completion version pki -address -n -timeout -config" -- "$cur")) ;;
	status) COMPREPLY=($(compgen -W "-w -interval -o" -- "$cur")) ;;
	describe|protect)
		local ids
		ids=$(rrcctl "${COMP_WORDS[@]:1:i-1}" status -o json 2>/dev/null | sed -n 's/^    "id": "\(.*\)",$/\1/p')
		COMPREPLY=($(compgen -W "-o -backup $ids" -- "$cur")) ;;
	metrics) COMPREPLY=($(compgen -W "-listen" -- "$cur")) ;;
	completion) COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
	pki) COMPREPLY=($(compgen -W "-dir -name" -- "$cur")) ;;
	esac
}
complete -F _rrcctl rrcctl
`

// completionCmd implements `rrcctl completion bash`.
func completionCmd(args []string, w io.Writer) error {
	if len(args) != 1 || args[0] != "bash" {
		return fmt.Errorf("completion: want `completion bash` (the only shell supported)")
	}
	_, err := io.WriteString(w, bashCompletion)
	return err
}
