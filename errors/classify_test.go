package errors_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	apierrors "github.com/chatguard/chatguard/errors"
)

// Bodies as real Node libraries serialise them (res.status(n).json(err) or
// JSON.stringify). They double as the fuzz seed corpus.
const (
	// Joi v17 ValidationError: isJoi and name live on the prototype, so only
	// _original and details are own enumerable properties.
	bodyJoi = `{"_original":{"email":"not-an-email","password":"S3cr3tZZ"},"details":[{"message":"\"email\" must be a valid email","path":["email"],"type":"string.email","context":{"value":"not-an-email","invalids":["not-an-email"],"label":"email","key":"email"}},{"message":"\"password\" length must be at least 12 characters long","path":["password"],"type":"string.min","context":{"limit":12,"value":"S3cr3tZZ","label":"password","key":"password"}}]}`
	// Joi v14 and earlier: isJoi and name were own properties, _object held the input.
	bodyJoiLegacy = `{"isJoi":true,"name":"ValidationError","details":[{"message":"\"conversationId\" is required","path":["conversationId"],"type":"any.required","context":{"key":"conversationId","label":"conversationId"}}],"_object":{"text":"hola"}}`
	// An app that forwards err.name with the details.
	bodyJoiNamed = `{"name":"ValidationError","message":"\"text\" is not allowed to be empty","details":[{"message":"\"text\" is not allowed to be empty","path":["text"],"type":"string.empty","context":{"label":"text","value":"","key":"text"}}]}`
	// Nested paths with numeric array indices.
	bodyJoiNested = `{"_original":{"conversation":{"participants":[{"email":"x"}]},"settings":{"apiKey":"sk_live_123"}},"details":[{"message":"\"conversation.participants[0].email\" must be a valid email","path":["conversation","participants",0,"email"],"type":"string.email","context":{"value":"x","invalids":["x"],"label":"conversation.participants[0].email","key":"email"}},{"message":"\"settings.apiKey\" is not allowed","path":["settings","apiKey"],"type":"object.unknown","context":{"child":"apiKey","label":"settings.apiKey","value":"sk_live_123","key":"apiKey"}},{"message":"\"limit\" must be a number","path":["limit"],"type":"number.base","context":{"label":"limit","value":true,"key":"limit"}}]}`
	// Joi under the conventional "error" key, and a detail without a path.
	bodyJoiWrapped = `{"success":false,"error":{"_original":{"text":""},"details":[{"message":"\"text\" is required","type":"any.required","context":{"label":"text","key":"text"}}]}}`

	// Joi string.pattern.base quotes the rejected value in its message.
	bodyJoiPattern = `{"_original":{"password":"S3cr3tZZ"},"details":[{"message":"\"password\" with value \"S3cr3tZZ\" fails to match the required pattern: /^[a-zA-Z0-9]{3,30}$/","path":["password"],"type":"string.pattern.base","context":{"regex":{},"value":"S3cr3tZZ","label":"password","key":"password"}}]}`

	// celebrate v15 errors() middleware.
	bodyCelebrate = `{"statusCode":400,"error":"Bad Request","message":"Validation failed","validation":{"body":{"source":"body","keys":["email"],"message":"\"email\" must be a valid email"},"query":{"source":"query","keys":["limit"],"message":"\"limit\" must be less than or equal to 100"}}}`

	// express-validator v6: res.status(422).json({errors: errors.array()}).
	bodyExpressValidatorV6 = `{"errors":[{"value":"","msg":"Invalid value","param":"email","location":"body"},{"value":"S3cr3tZZ","msg":"Password must be at least 12 characters","param":"password","location":"body"}]}`
	// express-validator v7: "path" instead of "param", a "type".
	bodyExpressValidatorV7 = `{"errors":[{"type":"field","value":"abc","msg":"Invalid value","path":"conversationId","location":"params"},{"type":"field","value":"S3cr3tZZ","msg":"Invalid value","path":"user.password","location":"body"},{"type":"field","value":42,"msg":"Must be a string","path":"text","location":"body"}]}`
	// express-validator v7: res.status(400).json(result.array()).
	bodyExpressValidatorArray = `[{"type":"field","value":"not-an-email","msg":"Invalid value","path":"email","location":"body"},{"type":"field","value":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl","msg":"Invalid value","path":"refreshToken","location":"body"}]`

	// Mongoose ValidationError (ValidatorError and CastError with toJSON).
	bodyMongoose = `{"errors":{"email":{"name":"ValidatorError","message":"Path ` + "`email`" + ` is required.","properties":{"message":"Path ` + "`email`" + ` is required.","type":"required","path":"email"},"kind":"required","path":"email"},"age":{"stringValue":"\"abc\"","valueType":"string","kind":"Number","value":"abc","path":"age","reason":{},"name":"CastError","message":"Cast to Number failed for value \"abc\" (type string) at path \"age\""},"token":{"name":"ValidatorError","message":"Path ` + "`token`" + ` is invalid.","properties":{"message":"Path ` + "`token`" + ` is invalid.","type":"regexp","path":"token","value":"tok_123"},"kind":"regexp","path":"token","value":"tok_123"}},"_message":"User validation failed","name":"ValidationError","message":"User validation failed: email: Path ` + "`email`" + ` is required."}`

	// Mongoose minlength: the value is quoted in the field's and the top-level message.
	bodyMongoosePassword = `{"errors":{"password":{"name":"ValidatorError","message":"Path ` + "`password` (`S3cr3tZZ`)" + ` is shorter than the minimum allowed length (12).","properties":{"message":"Path ` + "`password` (`S3cr3tZZ`)" + ` is shorter than the minimum allowed length (12).","type":"minlength","minlength":12,"path":"password","value":"S3cr3tZZ"},"kind":"minlength","path":"password","value":"S3cr3tZZ"}},"_message":"User validation failed","name":"ValidationError","message":"User validation failed: password: Path ` + "`password` (`S3cr3tZZ`)" + ` is shorter than the minimum allowed length (12)."}`

	// jsonwebtoken.
	bodyJWTExpired    = `{"name":"TokenExpiredError","message":"jwt expired","expiredAt":"2026-01-30T19:45:30.000Z"}`
	bodyJWTInvalid    = `{"name":"JsonWebTokenError","message":"invalid signature"}`
	bodyJWTMalformed  = `{"name":"JsonWebTokenError","message":"jwt malformed"}`
	bodyJWTNotBefore  = `{"name":"NotBeforeError","message":"jwt not active","date":"2026-01-30T19:45:30.000Z"}`
	bodyJWTNested     = `{"success":false,"error":{"name":"TokenExpiredError","message":"jwt expired","expiredAt":"2026-01-30T19:45:30.000Z"}}`
	bodyJWTNestedErr  = `{"err":{"name":"JsonWebTokenError","message":"invalid token"}}`
	bodyJWTNestedData = `{"data":{"name":"NotBeforeError","message":"jwt not active","date":"2026-01-30T19:45:30.000Z"}}`

	// express-jwt v8 UnauthorizedError (message is not enumerable).
	bodyExpressJWTRequired = `{"code":"credentials_required","status":401,"inner":{"message":"No authorization token was found"},"name":"UnauthorizedError"}`
	bodyExpressJWTExpired  = `{"code":"invalid_token","status":401,"inner":{"name":"TokenExpiredError","message":"jwt expired","expiredAt":"2026-01-30T19:45:30.000Z"},"name":"UnauthorizedError"}`
	bodyExpressJWTInvalid  = `{"code":"invalid_token","status":401,"inner":{"name":"JsonWebTokenError","message":"invalid signature"},"name":"UnauthorizedError"}`
	// express-jwt v5 set message as an own property.
	bodyExpressJWTv5Expired = `{"name":"UnauthorizedError","message":"jwt expired","code":"invalid_token","status":401,"inner":{"message":"jwt expired","expiredAt":"2026-01-30T19:45:30.000Z"}}`
	bodyExpressJWTRevoked   = `{"name":"UnauthorizedError","message":"The token has been revoked.","code":"revoked_token","status":401,"inner":{"message":"The token has been revoked."}}`

	// Firebase / Firestore.
	bodyFirestoreNotFound     = `{"code":"not-found","name":"FirebaseError","message":"No document to update: projects/chat/databases/(default)/documents/conversations/abc"}`
	bodyFirestoreDenied       = `{"code":"permission-denied","name":"FirebaseError","message":"Missing or insufficient permissions."}`
	bodyFirestoreUnauth       = `{"code":"unauthenticated","name":"FirebaseError","message":"Request had invalid authentication credentials."}`
	bodyFirestoreUnavailable  = `{"code":"unavailable","name":"FirebaseError","message":"Failed to get document because the client is offline."}`
	bodyFirestorePrefixed     = `{"code":"firestore/permission-denied","message":"Missing or insufficient permissions."}`
	bodyFirestorePrefixedDown = `{"code":"firestore/unavailable","message":"The service is currently unavailable."}`
	bodyStorageNotFound       = `{"code":"storage/object-not-found","message":"Firebase Storage: Object 'media/a.png' does not exist.","name":"FirebaseError"}`
	bodyFirebaseTokenExpired  = `{"code":"auth/id-token-expired","message":"Firebase ID token has expired. Get a fresh ID token from your client app and try again (auth/id-token-expired). See https://firebase.google.com/docs/auth/admin/verify-id-tokens for details on how to retrieve an ID token."}`
	bodyFirebaseUserNotFound  = `{"code":"auth/user-not-found","message":"There is no user record corresponding to the provided identifier."}`
	// firebase-admin FirebaseError spread or util-inspected: errorInfo + codePrefix.
	bodyFirebaseErrorInfo        = `{"errorInfo":{"code":"auth/user-not-found","message":"There is no user record corresponding to the provided identifier."},"codePrefix":"auth"}`
	bodyFirebaseErrorInfoRevoked = `{"errorInfo":{"code":"auth/id-token-revoked","message":"The Firebase ID token has been revoked."},"codePrefix":"auth"}`
	bodyFirebaseNested           = `{"error":{"code":"permission-denied","message":"Missing or insufficient permissions."}}`

	// @grpc/grpc-js ServiceError as Firestore (google-gax) throws it.
	bodyGRPCNotFound = `{"code":5,"details":"No document to update: projects/chat/databases/(default)/documents/conversations/abc","metadata":{"internalRepr":{},"options":{}},"note":"Exception occurred in retry method that was not classified as transient"}`
	bodyGRPCDenied   = `{"code":7,"details":"Missing or insufficient permissions.","metadata":{"internalRepr":{},"options":{}}}`
	bodyGRPCUnauth   = `{"code":16,"details":"Request had invalid authentication credentials.","metadata":{}}`
	bodyGRPCDown     = `{"code":14,"details":"No connection established","metadata":{"internalRepr":{},"options":{}}}`
	bodyGRPCDeadline = `{"code":4,"details":"Deadline exceeded","metadata":{}}`

	// Google API JSON errors.
	bodyGoogleAPI        = `{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}`
	bodyGoogleAPIDetails = `{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"IAM_PERMISSION_DENIED","domain":"firestore.googleapis.com"}]}}`

	// Twilio: the REST API's body and twilio-node's RestException.
	bodyTwilioAuth       = `{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}`
	bodyTwilioNode       = `{"status":400,"message":"The 'To' number +15005550001 is not a valid phone number.","code":21211,"moreInfo":"https://www.twilio.com/docs/errors/21211"}`
	bodyTwilioWhatsApp   = `{"code":63016,"message":"Failed to send freeform message because you are outside the allowed window. If you are using WhatsApp, please use a Message Template.","more_info":"https://www.twilio.com/docs/errors/63016","status":400}`
	bodyTwilioNested     = `{"error":{"status":400,"message":"The 'To' number +15005550001 is not a valid phone number.","code":21211,"moreInfo":"https://www.twilio.com/docs/errors/21211"}}`
	bodyTwilioOutOfRange = `{"code":10001,"message":"Account is not active","more_info":"https://www.twilio.com/docs/errors/10001","status":400}`

	// An envelope the backend already produces.
	bodyEnvelope       = `{"success":false,"error":{"code":"CONVERSATION_LOCKED","message":"Conversation is locked","timestamp":"2026-01-30T19:45:30.123Z"}}`
	bodyEnvelopeWithID = `{"success":false,"error":{"code":"NOT_FOUND","message":"Conversation not found","timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1706645130000_upstream1"}`

	// Express's default error handler and friends.
	bodyExpressHTML   = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot GET /api/nope</pre>\n</body>\n</html>\n"
	bodyNodeCrash     = `{"message":"TypeError: Cannot read properties of undefined (reading 'x')\n    at /app/src/a.js:1:2","stack":"TypeError: Cannot read properties of undefined (reading 'x')\n    at /app/src/a.js:1:2\n    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)"}`
	bodyNodeCrashText = "TypeError: Cannot read properties of undefined (reading 'x')\n    at /app/src/a.js:1:2\n    at Layer.handle [as handle_request] (/app/node_modules/express/lib/router/layer.js:95:5)"
)

type shapeCase struct {
	name   string
	status int
	body   string
	kind   string
	code   apierrors.Code
	// httpStatus is the status written; 0 means code.Status().
	httpStatus int
	// fields, when not nil, are the exact details.fields (sorted by name when sortFields).
	fields     []field
	sortFields bool
	// details, when not empty, is the exact JSON of the details.
	details string
	// message, when not empty, is the exact message; else the catalogue's.
	message string
}

func runShapeCases(t *testing.T, tests []shapeCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyJSON(tt.status, tt.body)
			if res.PassThrough || res.Err == nil {
				t.Fatalf("PassThrough=%v Err=%v", res.PassThrough, res.Err)
			}
			if res.Kind != tt.kind {
				t.Errorf("Kind = %q, want %q", res.Kind, tt.kind)
			}
			if res.Code != tt.code || res.Err.Code != tt.code {
				t.Errorf("Code = %s / Err.Code = %s, want %s", res.Code, res.Err.Code, tt.code)
			}
			wantStatus := tt.httpStatus
			if wantStatus == 0 {
				wantStatus = tt.code.Status()
			}
			if got := res.Err.HTTPStatus(); got != wantStatus {
				t.Errorf("HTTPStatus() = %d, want %d", got, wantStatus)
			}
			wantMsg := tt.message
			if wantMsg == "" {
				wantMsg = tt.code.Message()
			}
			if res.Err.Message != wantMsg {
				t.Errorf("Message = %q, want %q", res.Err.Message, wantMsg)
			}
			if tt.fields != nil {
				if len(res.Err.Details) != 1 {
					t.Errorf("details has keys beyond fields: %v", res.Err.Details)
				}
				got := fieldsOf(t, res.Err)
				if tt.sortFields {
					sortFields(got)
				}
				assertFields(t, got, tt.fields)
			}
			if tt.details != "" {
				if got := mustJSON(t, res.Err.Details); !jsonEqual(t, []byte(got), []byte(tt.details)) {
					t.Errorf("details = %s, want %s", got, tt.details)
				}
			}
			if tt.fields == nil && tt.details == "" && res.Err.Details != nil {
				t.Errorf("unexpected details %v", res.Err.Details)
			}
			if b := res.Err.Marshal(testID, testNow); !json.Valid(b) {
				t.Errorf("Marshal is not JSON: %s", b)
			}
		})
	}
}

func TestClassifyValidation(t *testing.T) {
	t.Parallel()
	fil := `"[FILTERED]"`
	runShapeCases(t, []shapeCase{
		{name: "joi v17", status: 400, body: bodyJoi, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("email", `"email" must be a valid email`, `"not-an-email"`),
			f("password", `"password" length must be at least 12 characters long`, fil),
		}},
		{name: "joi v14 isJoi+name, no value", status: 400, body: bodyJoiLegacy, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("conversationId", `"conversationId" is required`, `null`),
		}},
		{name: "joi name only", status: 422, body: bodyJoiNamed, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("text", `"text" is not allowed to be empty`, `""`),
		}},
		{name: "joi nested path with numeric index", status: 400, body: bodyJoiNested, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("conversation.participants.0.email", `"conversation.participants[0].email" must be a valid email`, `"x"`),
			f("settings.apiKey", `"settings.apiKey" is not allowed`, fil),
			f("limit", `"limit" must be a number`, `true`),
		}},
		{name: "joi under error, key from context", status: 400, body: bodyJoiWrapped, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("text", `"text" is required`, `null`),
		}},
		// An app that answers {error: err.name, message, details: err.details}
		// or {error: "Bad Request", details: err.details} (QA).
		{name: "joi details under error name", status: 400, kind: "joi", code: apierrors.CodeValidation,
			body:   `{"error":"ValidationError","message":"\"text\" is required","details":[{"message":"\"text\" is required","path":["text"],"type":"any.required","context":{"label":"text","key":"text"}}]}`,
			fields: []field{f("text", `"text" is required`, `null`)}},
		{name: "joi details by their shape", status: 400, kind: "joi", code: apierrors.CodeValidation,
			body:   `{"error":"Bad Request","details":[{"message":"\"limit\" must be a number","path":["limit"],"type":"number.base","context":{"value":"ten","label":"limit","key":"limit"}}]}`,
			fields: []field{f("limit", `"limit" must be a number`, `"ten"`)}},
		{name: "joi on a 500 is still a validation error", status: 500, body: bodyJoi, kind: "joi", code: apierrors.CodeValidation, fields: []field{
			f("email", `"email" must be a valid email`, `"not-an-email"`),
			f("password", `"password" length must be at least 12 characters long`, fil),
		}},
		{name: "celebrate", status: 400, body: bodyCelebrate, kind: "celebrate", code: apierrors.CodeValidation, fields: []field{
			f("limit", `"limit" must be less than or equal to 100`, `null`),
			f("email", `"email" must be a valid email`, `null`),
		}},
		{name: "celebrate, several keys", status: 400, kind: "celebrate", code: apierrors.CodeValidation,
			body: `{"statusCode":400,"error":"Bad Request","message":"Validation failed","validation":{"params":{"source":"params","keys":["conversationId","messageId"],"message":"\"conversationId\" must be a valid GUID"}}}`,
			fields: []field{
				f("conversationId", `"conversationId" must be a valid GUID`, `null`),
				f("messageId", `"conversationId" must be a valid GUID`, `null`),
			}},
		{name: "express-validator v6 param", status: 422, body: bodyExpressValidatorV6, kind: "express-validator", code: apierrors.CodeValidation, fields: []field{
			f("email", "Invalid value", `""`),
			f("password", "Password must be at least 12 characters", fil),
		}},
		{name: "express-validator v7 path", status: 400, body: bodyExpressValidatorV7, kind: "express-validator", code: apierrors.CodeValidation, fields: []field{
			f("conversationId", "Invalid value", `"abc"`),
			f("user.password", "Invalid value", fil),
			f("text", "Must be a string", `42`),
		}},
		{name: "express-validator top-level array", status: 400, body: bodyExpressValidatorArray, kind: "express-validator", code: apierrors.CodeValidation, fields: []field{
			f("email", "Invalid value", `"not-an-email"`),
			f("refreshToken", "Invalid value", fil),
		}},
		{name: "express-validator wildcard path", status: 400, kind: "express-validator", code: apierrors.CodeValidation,
			body: `{"errors":[{"type":"field","value":"x","msg":"Invalid value","path":"participants[1].email","location":"body"},{"type":"field","value":"hunter2","msg":"Too short","path":"passwords[0]","location":"body"}]}`,
			fields: []field{
				f("participants[1].email", "Invalid value", `"x"`),
				f("passwords[0]", "Too short", fil),
			}},
		{name: "mongoose", status: 400, body: bodyMongoose, kind: "mongoose", code: apierrors.CodeValidation, sortFields: true, fields: []field{
			f("age", `Cast to Number failed for value "abc" (type string) at path "age"`, `"abc"`),
			f("email", "Path `email` is required.", `null`),
			f("token", "Path `token` is invalid.", fil),
		}},
		{name: "mongoose under error", status: 500, kind: "mongoose", code: apierrors.CodeValidation,
			body:   `{"error":{"errors":{"credentials.secret":{"name":"ValidatorError","message":"Path ` + "`credentials.secret`" + ` is required.","kind":"required","path":"credentials.secret","value":""}},"_message":"Client validation failed","name":"ValidationError","message":"Client validation failed"}}`,
			fields: []field{f("credentials.secret", "Path `credentials.secret` is required.", fil)}},
	})
}

func TestClassifyJWT(t *testing.T) {
	t.Parallel()
	runShapeCases(t, []shapeCase{
		{name: "TokenExpiredError", status: 401, body: bodyJWTExpired, kind: "jwt", code: apierrors.CodeTokenExpired},
		{name: "TokenExpiredError on a 500", status: 500, body: bodyJWTExpired, kind: "jwt", code: apierrors.CodeTokenExpired},
		{name: "JsonWebTokenError", status: 401, body: bodyJWTInvalid, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "JsonWebTokenError malformed", status: 403, body: bodyJWTMalformed, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "NotBeforeError", status: 401, body: bodyJWTNotBefore, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "nested under error (not an envelope: no code)", status: 401, body: bodyJWTNested, kind: "jwt", code: apierrors.CodeTokenExpired},
		{name: "nested under err", status: 401, body: bodyJWTNestedErr, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "nested under data", status: 401, body: bodyJWTNestedData, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "express-jwt credentials_required", status: 401, body: bodyExpressJWTRequired, kind: "jwt", code: apierrors.CodeAuthRequired},
		{name: "express-jwt invalid_token with inner TokenExpiredError", status: 401, body: bodyExpressJWTExpired, kind: "jwt", code: apierrors.CodeTokenExpired},
		{name: "express-jwt invalid_token with inner JsonWebTokenError", status: 401, body: bodyExpressJWTInvalid, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "express-jwt v5 message jwt expired", status: 401, body: bodyExpressJWTv5Expired, kind: "jwt", code: apierrors.CodeTokenExpired},
		{name: "express-jwt revoked_token", status: 401, body: bodyExpressJWTRevoked, kind: "jwt", code: apierrors.CodeTokenInvalid},
		{name: "express-jwt under error", status: 401, body: `{"error":` + bodyExpressJWTExpired + `}`, kind: "jwt", code: apierrors.CodeTokenExpired},
		// An UnauthorizedError with a code express-jwt does not use is left to the status.
		{name: "UnauthorizedError unknown code", status: 401, body: `{"name":"UnauthorizedError","code":"insufficient_scope","status":401}`,
			kind: "status", code: apierrors.CodeAuthRequired, details: `{"upstreamCode":"insufficient_scope"}`},
	})
}

func TestClassifyFirebase(t *testing.T) {
	t.Parallel()
	runShapeCases(t, []shapeCase{
		{name: "not-found", status: 500, body: bodyFirestoreNotFound, kind: "firebase", code: apierrors.CodeNotFound},
		{name: "permission-denied", status: 500, body: bodyFirestoreDenied, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "unauthenticated", status: 500, body: bodyFirestoreUnauth, kind: "firebase", code: apierrors.CodeAuthRequired},
		{name: "unavailable", status: 500, body: bodyFirestoreUnavailable, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "firestore/permission-denied", status: 500, body: bodyFirestorePrefixed, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "firestore/unavailable", status: 503, body: bodyFirestorePrefixedDown, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "storage/object-not-found", status: 500, body: bodyStorageNotFound, kind: "firebase", code: apierrors.CodeNotFound},
		{name: "storage/unauthorized", status: 500, body: `{"code":"storage/unauthorized","message":"User does not have permission to access 'media/a.png'."}`, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "storage/retry-limit-exceeded", status: 500, body: `{"code":"storage/retry-limit-exceeded","message":"Max retry time for operation exceeded, please try again."}`, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "upper-case status as code", status: 500, body: `{"code":"PERMISSION_DENIED","message":"denied"}`, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "auth/id-token-expired", status: 401, body: bodyFirebaseTokenExpired, kind: "firebase", code: apierrors.CodeTokenExpired},
		{name: "auth/session-cookie-expired", status: 401, body: `{"code":"auth/session-cookie-expired","message":"The Firebase session cookie has expired."}`, kind: "firebase", code: apierrors.CodeTokenExpired},
		{name: "auth/user-not-found", status: 500, body: bodyFirebaseUserNotFound, kind: "firebase", code: apierrors.CodeNotFound},
		{name: "errorInfo wrapper", status: 500, body: bodyFirebaseErrorInfo, kind: "firebase", code: apierrors.CodeNotFound},
		{name: "errorInfo wrapper id-token-revoked", status: 401, body: bodyFirebaseErrorInfoRevoked, kind: "firebase", code: apierrors.CodeTokenInvalid},
		{name: "auth/argument-error", status: 401, body: `{"code":"auth/argument-error","message":"Decoding Firebase ID token failed."}`, kind: "firebase", code: apierrors.CodeTokenInvalid},
		{name: "auth/invalid-email", status: 400, body: `{"code":"auth/invalid-email","message":"The email address is improperly formatted."}`, kind: "firebase", code: apierrors.CodeValidation},
		{name: "auth/email-already-exists", status: 500, body: `{"errorInfo":{"code":"auth/email-already-exists","message":"The email address is already in use by another account."},"codePrefix":"auth"}`, kind: "firebase", code: apierrors.CodeValidation},
		{name: "auth/wrong-password", status: 400, body: `{"code":"auth/wrong-password","message":"The password is invalid."}`, kind: "firebase", code: apierrors.CodeAuthRequired},
		{name: "auth/insufficient-permission", status: 500, body: `{"code":"auth/insufficient-permission","message":"Credential implementation provided to initializeApp() does not have sufficient permission."}`, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "auth/internal-error (any other auth code)", status: 500, body: `{"code":"auth/internal-error","message":"An internal error has occurred."}`, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "nested under error", status: 500, body: bodyFirebaseNested, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "gRPC 5 NOT_FOUND", status: 500, body: bodyGRPCNotFound, kind: "firebase", code: apierrors.CodeNotFound},
		{name: "gRPC 7 PERMISSION_DENIED", status: 500, body: bodyGRPCDenied, kind: "firebase", code: apierrors.CodeForbidden},
		{name: "gRPC 16 UNAUTHENTICATED", status: 500, body: bodyGRPCUnauth, kind: "firebase", code: apierrors.CodeAuthRequired},
		{name: "gRPC 14 UNAVAILABLE", status: 500, body: bodyGRPCDown, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "gRPC 4 DEADLINE_EXCEEDED", status: 500, body: bodyGRPCDeadline, kind: "firebase", code: apierrors.CodeDatabase},
		{name: "Google API error with details", status: 403, body: bodyGoogleAPIDetails, kind: "firebase", code: apierrors.CodeForbidden},
		// Without details the numeric code is not taken for gRPC, but the
		// status string is; like every recognised shape, the catalogue message.
		{name: "Google API error at 404", status: 404, body: bodyGoogleAPI, kind: "firebase", code: apierrors.CodeNotFound, message: apierrors.CodeNotFound.Message()},
		// Not Firebase.
		{name: "gRPC code 0 falls back to the status", status: 500, body: `{"code":0,"details":"","metadata":{}}`, kind: "status", code: apierrors.CodeInternal},
		{name: "unknown gRPC number falls back", status: 500, body: `{"code":99,"details":"x","metadata":{}}`, kind: "status", code: apierrors.CodeInternal},
		{name: "numeric code without details or metadata", status: 500, body: `{"code":5,"message":"x"}`, kind: "status", code: apierrors.CodeInternal},
		{name: "non-integer numeric code", status: 500, body: `{"code":5.5,"details":"x"}`, kind: "status", code: apierrors.CodeInternal},
		{name: "node system error code", status: 500, body: `{"code":"ECONNREFUSED","errno":-111,"syscall":"connect","address":"127.0.0.1","port":6379}`, kind: "status", code: apierrors.CodeInternal},
		{name: "unknown service prefix", status: 500, body: `{"code":"stripe/not-found","message":"x"}`, kind: "status", code: apierrors.CodeInternal},
		{name: "messaging code not in the table", status: 500, body: `{"code":"messaging/registration-token-not-registered","message":"Requested entity was not found."}`, kind: "status", code: apierrors.CodeInternal},
	})
}

func TestClassifyTwilio(t *testing.T) {
	t.Parallel()
	twilio := func(code int) string { return fmt.Sprintf(`{"service":"twilio","serviceCode":%d}`, code) }
	runShapeCases(t, []shapeCase{
		{name: "20003 more_info", status: 500, body: bodyTwilioAuth, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(20003)},
		{name: "21211 twilio-node moreInfo", status: 400, body: bodyTwilioNode, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(21211)},
		{name: "63016 WhatsApp window", status: 500, body: bodyTwilioWhatsApp, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(63016)},
		{name: "nested under error", status: 500, body: bodyTwilioNested, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(21211)},
		{name: "lower bound 20000", status: 500, body: `{"code":20000,"more_info":"https://www.twilio.com/docs/errors/20000"}`, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(20000)},
		{name: "upper bound 69999", status: 500, body: `{"code":69999,"moreInfo":"https://www.twilio.com/docs/errors/69999"}`, kind: "twilio", code: apierrors.CodeExternalService, details: twilio(69999)},
		// Outside 20000–69999 it is not Twilio, even with more_info.
		{name: "10001 is not Twilio", status: 400, body: bodyTwilioOutOfRange, kind: "status", code: apierrors.CodeValidation, message: "Account is not active",
			details: `{"upstreamCode":10001}`}, // the app's own code, kept
		{name: "19999 is not Twilio", status: 500, body: `{"code":19999,"more_info":"https://www.twilio.com/docs/errors/19999"}`, kind: "status", code: apierrors.CodeInternal},
		{name: "70000 is not Twilio", status: 502, body: `{"code":70000,"more_info":"https://www.twilio.com/docs/errors/70000"}`, kind: "status", code: apierrors.CodeExternalService},
		{name: "string code is not Twilio", status: 500, body: `{"code":"21211","more_info":"https://www.twilio.com/docs/errors/21211"}`, kind: "status", code: apierrors.CodeInternal},
		{name: "no more_info is not Twilio", status: 500, body: `{"code":21211,"message":"The 'To' number is not a valid phone number."}`, kind: "status", code: apierrors.CodeInternal},
		{name: "fractional code is not Twilio", status: 500, body: `{"code":21211.5,"more_info":"x"}`, kind: "status", code: apierrors.CodeInternal},
	})
}

func TestClassifyStatusFallback(t *testing.T) {
	t.Parallel()
	var tests []shapeCase
	for _, tt := range []struct {
		status int
		code   apierrors.Code
	}{
		{400, apierrors.CodeValidation}, {401, apierrors.CodeAuthRequired}, {402, apierrors.CodeValidation},
		{403, apierrors.CodeForbidden}, {404, apierrors.CodeNotFound}, {405, apierrors.CodeNotFound},
		{407, apierrors.CodeAuthRequired}, {409, apierrors.CodeValidation}, {410, apierrors.CodeNotFound},
		{413, apierrors.CodePayloadTooLarge}, {418, apierrors.CodeValidation}, {422, apierrors.CodeValidation},
		{429, apierrors.CodeRateLimitExceeded}, {500, apierrors.CodeInternal}, {501, apierrors.CodeInternal},
		{502, apierrors.CodeExternalService}, {503, apierrors.CodeServiceUnavailable}, {504, apierrors.CodeUpstreamTimeout},
		{505, apierrors.CodeInternal}, {599, apierrors.CodeInternal},
	} {
		// The status written is the upstream's own, so 405 stays 405 and 410 stays 410.
		tests = append(tests,
			shapeCase{name: fmt.Sprintf("%d empty body", tt.status), status: tt.status, body: "", kind: "status", code: tt.code, httpStatus: tt.status},
			shapeCase{name: fmt.Sprintf("%d unrecognised JSON", tt.status), status: tt.status, body: `{"ok":false,"reason":42}`, kind: "status", code: tt.code, httpStatus: tt.status},
		)
	}
	runShapeCases(t, tests)
}

func TestClassifyEnvelopePassThrough(t *testing.T) {
	t.Parallel()
	idJSON := `,"requestId":"` + testID + `"}`
	tests := []struct {
		name     string
		status   int
		ct       string
		body     string
		wantBody string
		code     apierrors.Code
	}{
		{"requestId added", 409, jsonCT, bodyEnvelope, strings.TrimSuffix(bodyEnvelope, "}") + idJSON, "CONVERSATION_LOCKED"},
		{"requestId added after trailing newline", 409, jsonCT, bodyEnvelope + "\r\n\t ", strings.TrimSuffix(bodyEnvelope, "}") + idJSON, "CONVERSATION_LOCKED"},
		{"requestId kept", 404, jsonCT, bodyEnvelopeWithID, bodyEnvelopeWithID, "NOT_FOUND"},
		{"requestId kept, bytes untouched", 404, jsonCT, bodyEnvelopeWithID + "\n", bodyEnvelopeWithID + "\n", "NOT_FOUND"},
		{"pretty-printed, key order kept", 500, jsonCT,
			"{\n  \"success\": false,\n  \"error\": {\n    \"message\": \"Boom\",\n    \"code\": \"INTERNAL_ERROR\",\n    \"details\": {\"z\": 1, \"a\": [1, 2]}\n  },\n  \"meta\": {\"b\": 1, \"a\": 2}\n}\n",
			"{\n  \"success\": false,\n  \"error\": {\n    \"message\": \"Boom\",\n    \"code\": \"INTERNAL_ERROR\",\n    \"details\": {\"z\": 1, \"a\": [1, 2]}\n  },\n  \"meta\": {\"b\": 1, \"a\": 2}\n" + idJSON,
			"INTERNAL_ERROR"},
		{"no Content-Type, looks like JSON", 400, "", "  " + bodyEnvelope, "  " + strings.TrimSuffix(bodyEnvelope, "}") + idJSON, "CONVERSATION_LOCKED"},
		{"text/html Content-Type, JSON body", 403, "text/html", bodyEnvelope, strings.TrimSuffix(bodyEnvelope, "}") + idJSON, "CONVERSATION_LOCKED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := apierrors.ClassifyUpstream(apierrors.Reply{Status: tt.status, ContentType: tt.ct, Body: []byte(tt.body)}, testID, apierrors.ClassifyOptions{})
			if !res.PassThrough || res.Err != nil || res.Kind != "envelope" || res.Code != tt.code {
				t.Fatalf("PassThrough=%v Err=%v Kind=%q Code=%q", res.PassThrough, res.Err, res.Kind, res.Code)
			}
			if string(res.Body) != tt.wantBody {
				t.Errorf("Body =\n%s\nwant\n%s", res.Body, tt.wantBody)
			}
			if !json.Valid(res.Body) {
				t.Errorf("Body is not JSON: %s", res.Body)
			}
		})
	}
}

// An envelope whose requestId is empty, null or not a string gets ours; the
// rest of the document is unchanged (it is re-encoded, so only the value is compared).
func TestClassifyEnvelopeReplacesBadRequestID(t *testing.T) {
	t.Parallel()
	for _, rid := range []string{`""`, `null`, `42`, `{"id":"x"}`} {
		body := `{"success":false,"error":{"code":"NOT_FOUND","message":"Conversation not found","details":{"id":12345678901234567890}},"requestId":` + rid + `}`
		res := classifyJSON(404, body)
		if !res.PassThrough {
			t.Fatalf("requestId %s: not passed through: %+v", rid, res)
		}
		var got map[string]any
		dec := json.NewDecoder(bytes.NewReader(res.Body))
		dec.UseNumber()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("requestId %s: body %s: %v", rid, res.Body, err)
		}
		if got["requestId"] != testID {
			t.Errorf("requestId %s: got %v, want %s", rid, got["requestId"], testID)
		}
		want := strings.Replace(body, `"requestId":`+rid, `"requestId":"`+testID+`"`, 1)
		if !jsonEqual(t, res.Body, []byte(want)) {
			t.Errorf("requestId %s: body %s, want %s", rid, res.Body, want)
		}
		// Large integers survive the re-encoding exactly.
		if !bytes.Contains(res.Body, []byte("12345678901234567890")) {
			t.Errorf("requestId %s: number changed: %s", rid, res.Body)
		}
	}
}

// A request id that needs JSON escaping is escaped when added.
func TestClassifyEnvelopeEscapesRequestID(t *testing.T) {
	t.Parallel()
	id := `a"b\c</script>`
	res := apierrors.ClassifyUpstream(apierrors.Reply{Status: 400, ContentType: jsonCT, Body: []byte(bodyEnvelope)}, id, apierrors.ClassifyOptions{})
	var got map[string]any
	if err := json.Unmarshal(res.Body, &got); err != nil {
		t.Fatalf("body %s: %v", res.Body, err)
	}
	if got["requestId"] != id {
		t.Errorf("requestId %v, want %q", got["requestId"], id)
	}
}

func TestClassifyNotAnEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
	}{
		{"success true", `{"success":true,"error":{"code":"NOT_FOUND"}}`},
		{"success as string", `{"success":"false","error":{"code":"NOT_FOUND"}}`},
		{"no success", `{"error":{"code":"NOT_FOUND"}}`},
		{"empty code", `{"success":false,"error":{"code":"","message":"x"}}`},
		{"numeric code", `{"success":false,"error":{"code":404,"message":"x"}}`},
		{"error is a string", `{"success":false,"error":"Conversation not found"}`},
		{"inside an array", `[{"success":false,"error":{"code":"NOT_FOUND"}}]`},
		{"two documents", bodyEnvelope + bodyEnvelope},
		{"invalid JSON", `{"success":false,"error":{"code":"NOT_FOUND"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := classifyJSON(404, tt.body)
			if res.PassThrough || res.Err == nil || res.Kind == "envelope" {
				t.Errorf("PassThrough=%v Kind=%q Body=%s", res.PassThrough, res.Kind, res.Body)
			}
		})
	}
}

// A byte-order mark before the JSON (some Windows-made templates and
// serializers write one) and an ISO-8859-1 body that says so no longer
// cost the upstream's message: the envelope passed through as the
// catalogue's text, and "Conversación" came out as "Conversaci\uFFFDn".
func TestClassifyBOMAndLatin1(t *testing.T) {
	t.Parallel()
	bom := "\xef\xbb\xbf"
	env := apierrors.ClassifyUpstream(apierrors.Reply{Status: 403, ContentType: "application/json",
		Body: []byte(bom + `{"success":false,"error":{"code":"FORBIDDEN","message":"Not your conversation"}}`)}, testID, apierrors.ClassifyOptions{})
	if !env.PassThrough || !strings.HasPrefix(string(env.Body), `{"success":false`) || !strings.Contains(string(env.Body), testID) {
		t.Errorf("envelope after a BOM: %+v %s", env, env.Body)
	}
	msg := apierrors.ClassifyUpstream(apierrors.Reply{Status: 404, ContentType: "application/json",
		Body: []byte(bom + `{"message":"Conversation not found"}`)}, testID, apierrors.ClassifyOptions{})
	if msg.Err == nil || msg.Err.Message != "Conversation not found" {
		t.Errorf("message after a BOM: %+v", msg.Err)
	}
	latin1 := apierrors.ClassifyUpstream(apierrors.Reply{Status: 404, ContentType: "application/json; charset=ISO-8859-1",
		Body: []byte("{\"message\":\"Conversaci\xf3n no encontrada\"}")}, testID, apierrors.ClassifyOptions{})
	if latin1.Err == nil || latin1.Err.Message != "Conversación no encontrada" {
		t.Errorf("ISO-8859-1 message: %+v", latin1.Err)
	}
}
