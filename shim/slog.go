// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package shim

import (
	"context"
	"log/slog"

	"github.com/containerd/log"
)

// The engine logs with log/slog; the shim's log is containerd's logger
// (logrus), which containerd collects per shim. slogHandler forwards the
// engine's records to that logger, so the engine's lines carry the shim's
// fields (the container id) and land in containerd's log.
type slogHandler struct {
	entry *log.Entry
	group string
}

// engineLogger returns a slog.Logger writing to ctx's containerd logger.
func engineLogger(ctx context.Context) *slog.Logger {
	return slog.New(&slogHandler{entry: log.G(ctx)})
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.entry.Logger.IsLevelEnabled(logrusLevel(l))
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	fields := log.Fields{}
	r.Attrs(func(a slog.Attr) bool {
		fields[h.key(a.Key)] = a.Value.Resolve().Any()
		return true
	})
	h.entry.WithFields(fields).Log(logrusLevel(r.Level), r.Message)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := log.Fields{}
	for _, a := range attrs {
		fields[h.key(a.Key)] = a.Value.Resolve().Any()
	}
	return &slogHandler{entry: h.entry.WithFields(fields), group: h.group}
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &slogHandler{entry: h.entry, group: h.key(name)}
}

func (h *slogHandler) key(k string) string {
	if h.group == "" {
		return k
	}
	return h.group + "." + k
}

func logrusLevel(l slog.Level) log.Level {
	switch {
	case l >= slog.LevelError:
		return log.ErrorLevel
	case l >= slog.LevelWarn:
		return log.WarnLevel
	case l >= slog.LevelInfo:
		return log.InfoLevel
	default:
		return log.DebugLevel
	}
}
