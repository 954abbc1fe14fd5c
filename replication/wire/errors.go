// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package wire

import "errors"

// Errors of the decoder. Every error it returns wraps exactly one of these so
// that callers can map it to an Error frame code with errors.Is.
var (
	ErrBadMagic        = errors.New("bad magic")
	ErrBadVersion      = errors.New("unsupported protocol version")
	ErrUnknownType     = errors.New("unknown frame type")
	ErrBadFlags        = errors.New("unknown frame flags")
	ErrPayloadTooLarge = errors.New("payload too large")
	ErrTruncated       = errors.New("truncated input")
	ErrChecksum        = errors.New("frame checksum mismatch")
	ErrSequence        = errors.New("out-of-order sequence")
	ErrEpochOrder      = errors.New("out-of-order epoch")
	ErrUnexpectedFrame = errors.New("unexpected frame")
	ErrPairMismatch    = errors.New("frame of another pair")
	ErrMalformed       = errors.New("malformed payload")
)
