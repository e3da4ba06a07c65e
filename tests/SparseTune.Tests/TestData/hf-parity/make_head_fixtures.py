# Builds tiny BertForQuestionAnswering / BertForMultipleChoice fixtures from the bert-tiny parity fixture:
# body weights and the reference last_hidden_state come from it (an independent PyTorch implementation);
# the heads are computed here in PyTorch: qa_outputs(h) and classifier(tanh(pooler.dense(h[:, 0]))).
import json, struct, sys, os, shutil
import torch

def load(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    dt = {'F32': torch.float32, 'I64': torch.int64, 'I32': torch.int32}
    for k, v in header.items():
        if k == '__metadata__': continue
        a, b = v['data_offsets']
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=dt[v['dtype']]).reshape(v['shape']).clone()
    return out

def save(path, tensors):
    header, blobs, off = {}, [], 0
    names = {torch.float32: 'F32', torch.int64: 'I64'}
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        b = t.numpy().tobytes()
        header[k] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(header).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)

src, dst = sys.argv[1], sys.argv[2]
weights = load(os.path.join(src, 'model.safetensors'))
ref = load(os.path.join(src, 'reference.safetensors'))
config = json.load(open(os.path.join(src, 'config.json')))
h = ref['last_hidden_state']          # (B, T, C)
ids, mask = ref['input_ids'], ref['attention_mask']
g = torch.Generator().manual_seed(21)
C = config['hidden_size']

# QA: no pooler, no classifier; qa_outputs (2, C)
qa = {k: v for k, v in weights.items() if not k.startswith('classifier') and not k.startswith('bert.pooler')}
qa['qa_outputs.weight'] = torch.randn(2, C, generator=g) * 0.5
qa['qa_outputs.bias'] = torch.randn(2, generator=g) * 0.1
logits = h @ qa['qa_outputs.weight'].T + qa['qa_outputs.bias']
cfg = {k: v for k, v in config.items() if k not in ('id2label', 'label2id')}
cfg['architectures'] = ['BertForQuestionAnswering']
os.makedirs(os.path.join(dst, 'bert-tiny-qa'), exist_ok=True)
save(os.path.join(dst, 'bert-tiny-qa', 'model.safetensors'), qa)
json.dump(cfg, open(os.path.join(dst, 'bert-tiny-qa', 'config.json'), 'w'), indent=2)
save(os.path.join(dst, 'bert-tiny-qa', 'reference.safetensors'), {
    'input_ids': ids, 'attention_mask': mask, 'last_hidden_state': h,
    'start_logits': logits[..., 0].contiguous(), 'end_logits': logits[..., 1].contiguous()})

# Multiple choice: pooler kept, classifier (1, C); rows paired as (B/2, 2, T)
B, T = ids.shape
assert B % 2 == 0, B
mc = {k: v for k, v in weights.items() if not k.startswith('classifier')}
mc['classifier.weight'] = torch.randn(1, C, generator=g) * 0.5
mc['classifier.bias'] = torch.randn(1, generator=g) * 0.1
pooled = torch.tanh(h[:, 0] @ mc['bert.pooler.dense.weight'].T + mc['bert.pooler.dense.bias'])
scores = (pooled @ mc['classifier.weight'].T + mc['classifier.bias']).view(B // 2, 2)
cfg = dict(cfg); cfg['architectures'] = ['BertForMultipleChoice']
os.makedirs(os.path.join(dst, 'bert-tiny-mc'), exist_ok=True)
save(os.path.join(dst, 'bert-tiny-mc', 'model.safetensors'), mc)
json.dump(cfg, open(os.path.join(dst, 'bert-tiny-mc', 'config.json'), 'w'), indent=2)
save(os.path.join(dst, 'bert-tiny-mc', 'reference.safetensors'), {
    'input_ids': ids.view(B // 2, 2, T).contiguous(), 'attention_mask': mask.view(B // 2, 2, T).contiguous(), 'logits': scores.contiguous()})
print('B, T =', B, T, 'qa logits', logits.shape, 'mc scores', scores.shape)
