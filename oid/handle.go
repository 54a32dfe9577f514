package oid

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"vnic/ndis"
	"vnic/sadb"
)

// envelope is the part of a request the dispatcher reads first.
type envelope struct {
	ID  json.RawMessage `json:"id"`
	OID json.RawMessage `json:"oid"`
}

// reply is a response about to be written, and whether the connection
// turns into an event stream after it.
type reply struct {
	body      response
	subscribe bool
	oid       string // the OID, when the request named a known one
}

// handle answers one request line. It never panics on any input, and every
// response it returns carries a Header with a valid NDIS status name.
// Key material in line is the caller's to wipe.
func (s *Server) handle(line []byte) reply {
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return s.fail(nil, decodeError(err, wholeRequest))
	}
	id := env.ID
	if len(id) == 0 {
		id = nil
	}
	// A request that names its id or its OID twice is refused before
	// either is used; its id, when that is what it names twice, is not
	// known.
	if path, twice := duplicateField(line, reflect.TypeFor[envelope]()); twice {
		if path == "id" {
			id = nil
		}
		return s.fail(id, givenTwice(path))
	}
	var name string
	if len(env.OID) == 0 || string(env.OID) == "null" {
		return s.fail(id, invalid("missing field \"oid\": name the request, for example \"oid\": %q", OIDCapabilities))
	}
	if err := json.Unmarshal(env.OID, &name); err != nil {
		return s.fail(id, invalid("oid: expected a string naming the request, for example %q", OIDCapabilities))
	}
	h := handlers[name]
	if h == nil {
		if strings.HasPrefix(name, "OID_") || strings.HasPrefix(name, "VNIC_") {
			return s.fail(id, notSupported("unknown OID %s: vnic answers %s", quote(name), strings.Join(oidNames, ", ")))
		}
		return s.fail(id, notSupported("oid: not an OID vnic answers: use one of %s", strings.Join(oidNames, ", ")))
	}
	body, sub, err := h(s, line)
	if err != nil {
		r := s.fail(id, err)
		r.oid = name
		return r
	}
	s.head(body, id)
	return reply{body: body, subscribe: sub, oid: name}
}

// handler answers one OID: the response (its Header filled in except id
// and generation), or an error for a response with only a Header.
type handler func(s *Server, line []byte) (resp response, subscribe bool, err error)

var oidNames = []string{
	OIDCapabilities, OIDAddSA, OIDAddSAEx, OIDDeleteSA, OIDUpdateSA,
	OIDQuerySA, OIDStatistics, OIDRequestDelete, OIDSubscribeEvents,
}

var handlers = map[string]handler{
	OIDCapabilities:    (*Server).capabilities,
	OIDAddSA:           (*Server).addSA,
	OIDAddSAEx:         (*Server).addSAEx,
	OIDDeleteSA:        (*Server).deleteSA,
	OIDUpdateSA:        (*Server).updateSA,
	OIDQuerySA:         (*Server).querySA,
	OIDStatistics:      (*Server).statistics,
	OIDRequestDelete:   (*Server).requestDelete,
	OIDSubscribeEvents: (*Server).subscribeEvents,
}

// response is any response: every response type embeds a Header.
type response interface{ header() *Header }

func (h *Header) header() *Header { return h }

// head fills in the id and generation, and a success status if none.
func (s *Server) head(body response, id json.RawMessage) {
	h := body.header()
	h.ID = id
	h.Generation = s.dev.Generation()
	if h.Status == "" {
		h.Status = ndis.StatusSuccess.String()
	}
}

// fail returns the error response for err.
func (s *Server) fail(id json.RawMessage, err error) reply {
	e := ndis.AsError(err)
	h := &Header{Status: e.Status.String(), Reason: e.Reason}
	if i, ok := e.Element(); ok {
		h.Element = &i
	}
	if h.Status == ndis.StatusSuccess.String() { // not reached: err is never nil here
		h.Status = ndis.StatusFailure.String()
	}
	s.head(h, id)
	return reply{body: h}
}

// wholeRequest, as decode's element, says that the data is the request.
const wholeRequest = -1

// decode reads a request's parameters, or its element elem (wholeRequest:
// the request itself), into v, refusing unknown fields, fields given
// twice in one object and trailing data. Its errors are *ndis.Error
// values about that element.
func decode(data []byte, v any, elem int) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	if err != nil {
		err = decodeError(err, elem)
	} else if rest := bytes.TrimSpace(data[d.InputOffset():]); len(rest) > 0 {
		err = invalidData("unexpected data after the JSON object at byte %d: send one object per line", d.InputOffset())
	} else if path, twice := duplicateField(data, reflect.TypeOf(v)); twice {
		// encoding/json keeps the last of the two: refused instead, so
		// that a misspelt or doubled field cannot drop a setting.
		err = givenTwice(path)
	}
	if err != nil && elem != wholeRequest {
		return ndis.AsError(err).At(elem)
	}
	return err
}

// decodeError turns a JSON decoding error into an *ndis.Error that names
// the field and never quotes the input beyond a field name.
func decodeError(err error, elem int) error {
	var ne *ndis.Error
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	subject := "the request"
	if elem != wholeRequest {
		subject = "the bundle"
	}
	switch {
	case errors.As(err, &ne):
		return ne
	case errors.As(err, &syn):
		return invalidData("%s is not valid JSON (error at byte %d): send one JSON object per line", subject, syn.Offset)
	case errors.As(err, &typ):
		got, lit, _ := strings.Cut(typ.Value, " ")
		if typ.Field == "" {
			return invalidData("%s is not a JSON object but a JSON %s: send one JSON object per line", subject, got)
		}
		if got == "number" && lit != "" {
			// A number that the field's type cannot hold: said as written.
			return invalid("field %q: expected %s, got %s", typ.Field, typeWords(typ.Type.String()), numberWords(lit, typ.Type))
		}
		return invalid("field %q: expected %s, got a JSON %s", typ.Field, typeWords(typ.Type.String()), got)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if u, err := strconv.Unquote(f); err == nil {
			f = u
		}
		return invalid("unknown field %s (the fields are those of docs/oid-channel.md)", quote(f))
	case errors.Is(err, io.EOF):
		return invalidData("%s is empty: send one JSON object per line", subject)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidData("%s ends before its JSON object does: send one whole JSON object per line", subject)
	}
	return invalid("%v", err)
}

// typeWords says in words what a Go type takes in JSON.
func typeWords(t string) string {
	switch strings.TrimPrefix(t, "*") {
	case "string", "oid.Key":
		return "a string"
	case "uint8":
		return "a number from 0 to 255"
	case "uint16":
		return "a number from 0 to 65535"
	case "uint32":
		return "a number from 0 to 4294967295"
	case "uint64":
		return "a number from 0 to 18446744073709551615"
	case "int":
		return "a whole number"
	case "bool":
		return "true or false"
	}
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a JSON array"
	case strings.HasPrefix(t, "map["):
		return "a JSON object"
	}
	return "a JSON object"
}

func (s *Server) capabilities(line []byte) (response, bool, error) {
	var req struct{ envelope }
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	return &CapabilitiesResponse{Capabilities: s.dev.Capabilities()}, false, nil
}

// addSA is ADD_SA: each element is decoded on its own, so that one
// malformed element fails alone, as one refused by the SA database does.
func (s *Server) addSA(line []byte) (response, bool, error) {
	var req struct {
		envelope
		SAs []json.RawMessage `json:"sas"`
	}
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	defer func() {
		for _, r := range req.SAs {
			clear(r)
		}
	}()
	if req.SAs == nil {
		return nil, false, invalid("missing field \"sas\": give a list of SA bundles")
	}
	if len(req.SAs) == 0 {
		return nil, false, invalid("\"sas\" is empty: give at least one SA bundle")
	}
	bundles := make([]SA, len(req.SAs))
	errs := make([]error, len(req.SAs))
	for i, raw := range req.SAs {
		errs[i] = decode(raw, &bundles[i], i)
	}
	results, failed, status := s.add(bundles, errs)
	resp := &AddSAResponse{Results: results}
	resp.Status = status.String()
	if status != ndis.StatusSuccess {
		for i, e := range failed {
			if e != nil {
				resp.Reason, resp.Element = e.Reason, &i
				break
			}
		}
	}
	return resp, false, nil
}

func (s *Server) addSAEx(line []byte) (response, bool, error) {
	var req struct {
		envelope
		SA *json.RawMessage `json:"sa"`
	}
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	if req.SA == nil {
		return nil, false, invalid("missing field \"sa\": give one SA bundle")
	}
	defer clear(*req.SA)
	var b SA
	err := decode(*req.SA, &b, 0)
	results, errs, status := s.add([]SA{b}, []error{err})
	resp := &AddSAExResponse{Handle: results[0].Handle}
	resp.Status = status.String()
	if e := errs[0]; e != nil {
		resp.Reason = "sa: " + e.Reason // the one bundle, named by its field
	}
	return resp, false, nil
}

// add offloads bundles whose decoding succeeded (errs[i] == nil) in one
// batch, and returns one result per bundle, each failed bundle's error (nil
// for one added) and the request's status: NDIS says success if any
// element was added, else the first failure's status. It wipes the keys of
// the bundles.
func (s *Server) add(bundles []SA, errs []error) ([]AddResult, []*ndis.Error, ndis.Status) {
	defer func() {
		for i := range bundles {
			bundles[i].KeyData.Wipe()
		}
	}()
	results := make([]AddResult, len(bundles))
	failed := make([]*ndis.Error, len(bundles))
	var cfgs []sadb.Config
	var index []int // index[j] is the bundle of cfgs[j]
	for i := range bundles {
		err := errs[i]
		if err == nil {
			var c sadb.Config
			if c, err = bundles[i].Config(); err == nil {
				cfgs = append(cfgs, c)
				index = append(index, i)
				continue
			}
		}
		failed[i] = ndis.AsError(err).At(i)
	}
	if len(cfgs) > 0 {
		res, _ := s.dev.Table().Add(cfgs)
		for j, r := range res {
			i := index[j]
			if r.Err != nil {
				// The table's element j is the request's element i.
				failed[i] = ndis.AsError(r.Err).At(i)
				continue
			}
			results[i] = AddResult{Handle: uint64(r.Handle), Status: ndis.StatusSuccess.String()}
			c := &cfgs[j]
			s.log.Debug("SA added", "handle", r.Handle, "direction", c.Direction.String(), "spi", fmt.Sprintf("0x%08x", c.SPI),
				"mode", c.Mode.String(), "src", addrString(c.Src), "dst", addrString(c.Dst))
		}
	}
	status, added := ndis.StatusSuccess, false
	for i, e := range failed {
		if e == nil {
			added = true
			continue
		}
		results[i] = AddResult{Status: e.Status.String(), Reason: e.Reason}
		if status == ndis.StatusSuccess {
			status = e.Status
		}
		s.log.Debug("SA refused", "element", i, "status", e.Status.String(), "reason", e.Reason)
	}
	if added {
		return results, failed, ndis.StatusSuccess
	}
	return results, failed, status
}

func (s *Server) deleteSA(line []byte) (response, bool, error) {
	var req struct {
		envelope
		Handles []uint64 `json:"handles"`
	}
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	if len(req.Handles) == 0 {
		return nil, false, invalid("\"handles\" is missing or empty: give the handles to delete")
	}
	hs := make([]sadb.Handle, len(req.Handles))
	for i, h := range req.Handles {
		hs[i] = sadb.Handle(h)
	}
	errs := s.dev.Table().Delete(hs)
	resp := &DeleteSAResponse{Results: make([]DeleteResult, len(hs))}
	status, deleted := ndis.StatusSuccess, false
	for i, err := range errs {
		r := DeleteResult{Handle: req.Handles[i], Status: ndis.StatusOf(err).String()}
		if err != nil {
			r.Reason = err.Error()
			if status == ndis.StatusSuccess {
				status, resp.Reason = ndis.StatusOf(err), r.Reason
			}
		} else {
			deleted = true
			s.log.Debug("SA deleted", "handle", req.Handles[i])
		}
		resp.Results[i] = r
	}
	if deleted {
		status, resp.Reason = ndis.StatusSuccess, ""
	}
	resp.Status = status.String()
	return resp, false, nil
}

// updateSARequest and handleRequest are UpdateSARequest and HandleRequest
// as the server reads them: with the envelope's id, as it is. Request.ID,
// an any, would take a number as a float64 and refuse one beyond its
// range (1e999), which is a valid id. (The other handlers read their
// requests into such structs too.)
type (
	updateSARequest struct {
		envelope
		Handle                  uint64  `json:"handle"`
		Operation               uint32  `json:"Operation,omitempty"`
		Spi                     *uint32 `json:"Spi"`
		SequenceNumberHighOrder *uint32 `json:"SequenceNumberHighOrder"`
	}
	handleRequest struct {
		envelope
		Handle uint64 `json:"handle,omitempty"`
	}
)

func (s *Server) updateSA(line []byte) (response, bool, error) {
	var req updateSARequest
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	switch {
	case req.Handle == 0:
		return nil, false, invalid("\"handle\" is missing or 0: give the SA's handle")
	case req.Spi == nil:
		return nil, false, invalid("\"Spi\" is missing: give the SA's SPI")
	case req.SequenceNumberHighOrder == nil:
		return nil, false, invalid("\"SequenceNumberHighOrder\" is missing: give the new high-order 32 bits")
	}
	switch ndis.Operation(req.Operation) {
	case 0, ndis.OperationESP:
	case ndis.OperationAH:
		return nil, false, invalid("SA %d has no AH SA (Operation 1): vnic offloads ESP only (Operation 2)", req.Handle)
	default:
		return nil, false, invalid("Operation %d: expected 2 (ESP)", req.Operation)
	}
	if err := s.dev.Table().UpdateESN(sadb.Handle(req.Handle), *req.Spi, *req.SequenceNumberHighOrder); err != nil {
		return nil, false, err
	}
	s.log.Debug("SA updated", "handle", req.Handle, "seq_high", *req.SequenceNumberHighOrder)
	return &Header{}, false, nil
}

func (s *Server) querySA(line []byte) (response, bool, error) {
	var req handleRequest
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	t := s.dev.Table()
	now := time.Now()
	resp := &QuerySAResponse{SAs: []SAInfo{}}
	if req.Handle != 0 {
		sa := t.Get(sadb.Handle(req.Handle))
		if sa == nil {
			return nil, false, invalid("unknown handle %d", req.Handle)
		}
		resp.SAs = append(resp.SAs, describe(t, sa, now))
		return resp, false, nil
	}
	for _, sa := range t.List() {
		resp.SAs = append(resp.SAs, describe(t, sa, now))
	}
	return resp, false, nil
}

func (s *Server) statistics(line []byte) (response, bool, error) {
	var req struct{ envelope }
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	return &StatisticsResponse{Stats: s.dev.Stats()}, false, nil
}

func (s *Server) requestDelete(line []byte) (response, bool, error) {
	var req handleRequest
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	if req.Handle == 0 {
		return nil, false, invalid("\"handle\" is missing or 0: give the SA's handle")
	}
	if err := s.dev.RequestDelete(sadb.Handle(req.Handle)); err != nil {
		return nil, false, err
	}
	s.log.Debug("SA delete requested by operator", "handle", req.Handle)
	return &Header{}, false, nil
}

func (s *Server) subscribeEvents(line []byte) (response, bool, error) {
	var req struct{ envelope }
	if err := decode(line, &req, wholeRequest); err != nil {
		return nil, false, err
	}
	return &Header{}, true, nil
}
