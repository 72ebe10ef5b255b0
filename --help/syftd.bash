# bash completion for syftd (generated from its argparse parser by tools/cli_docs.py)
_syftd() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" command="" i opts
    case "$prev" in
        --config|--runtime-dir|-c) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -c|--config) ((i++)) ;;
            -*) ;;
            *) command="${COMP_WORDS[i]}"; break ;;
        esac
    done
    if [[ -z "$command" ]]; then
        COMPREPLY=($(compgen -W "run check-config status why trigger history expire simulate node grid -h --help --version --config -c --json" -- "$cur"))
        return
    fi
    case "$command" in
        run) opts="-h --help --config -c --json" ;;
        check-config) opts="-h --help --config -c --json --as-user" ;;
        status) opts="-h --help --config -c --json --runtime-dir" ;;
        why) opts="-h --help --config -c --json --runtime-dir" ;;
        trigger) opts="-h --help --config -c --json --runtime-dir --force" ;;
        history) opts="-h --help --config -c --json --runtime-dir --limit" ;;
        expire) opts="-h --help --config -c --json --runtime-dir" ;;
        simulate) opts="-h --help --config -c --json --runtime-dir --for power-loss network-loss clear" ;;
        node) opts="" ;;
        grid) opts="" ;;
        *) opts="" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _syftd syftd
