package ndis

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

// TestError: an Error keeps its status, element, reason and cause apart,
// and assembles them only as text.
func TestError(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	e := Errorf(StatusInvalidData, "KeyData: %w", cause)
	if e.Error() != "KeyData: unexpected EOF" || e.Reason != e.Error() || !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Errorf("Errorf with %%w: %q, cause %v", e.Error(), e.Unwrap())
	}
	if _, ok := e.Element(); ok {
		t.Error("an Errorf error concerns an element")
	}
	at := e.At(3)
	if i, ok := at.Element(); !ok || i != 3 || at.Error() != "element 3: KeyData: unexpected EOF" || at.Reason != e.Reason {
		t.Errorf("At(3): element %d %v, %q", i, ok, at.Error())
	}
	if i, _ := at.At(0).Element(); i != 0 {
		t.Errorf("At(0) of element 3 is about element %d", i)
	}
	if _, ok := e.Element(); ok {
		t.Error("At changed the error it was called on")
	}

	if AsError(at) != at {
		t.Error("AsError of an *Error is not that error")
	}
	wrapped := fmt.Errorf("while adding: %w", at)
	w := AsError(wrapped)
	if w.Status != StatusInvalidData || w.Reason != wrapped.Error() || !errors.Is(w, io.ErrUnexpectedEOF) {
		t.Errorf("AsError of a wrapped *Error: %v %q", w.Status, w.Reason)
	}
	plain := AsError(errors.New("disk on fire"))
	if plain.Status != StatusFailure || plain.Error() != "disk on fire" || plain.Unwrap() == nil {
		t.Errorf("AsError of a plain error: %v %q", plain.Status, plain.Error())
	}
	if StatusOf(wrapped) != StatusInvalidData || StatusOf(nil) != StatusSuccess {
		t.Error("StatusOf")
	}
}
