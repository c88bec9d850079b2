package api

import (
	"errors"
	"net/http"
)

// ErrRefusedInput means the agent refused a request's input (400): a bad
// name, address or policy; it changed nothing.
var ErrRefusedInput = errors.New("the agent refused the input")

// refusedInput is the agent's own message, matching ErrRefusedInput.
type refusedInput struct{ msg string }

func (r refusedInput) Error() string        { return r.msg }
func (r refusedInput) Is(target error) bool { return target == ErrRefusedInput }

// answerError is the error for an answer with status code and message msg.
func answerError(code int, msg string) error {
	if code == http.StatusBadRequest {
		return refusedInput{msg}
	}
	return errors.New(msg)
}
